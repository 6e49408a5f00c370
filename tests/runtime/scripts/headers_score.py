"""A @rawhttp script reporting what it sees of the request, as Flask shows it: header names and
values (casing, repeated headers), args, form, files, get_data and full_path."""
import json

from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    headers = dict(request.headers)
    return AMLResponse({
        "names": sorted(name for name, _ in request.headers if name.startswith(("X-", "Content-"))),
        "content_type": headers.get("Content-Type", "").split(";")[0],  # (the multipart boundary varies)
        "multi": request.headers.get("X-Multi"),
        "args": {k: request.args.getlist(k) for k in request.args},
        "form": {k: request.form.getlist(k) for k in request.form},
        "files": {k: [f.filename, f.mimetype, len(f.read())] for k, f in request.files.items()},
        "data_length": len(request.get_data()),
        "full_path": request.full_path,
        "method": request.method,
    }, 200, json_str=True)
