"""A @rawhttp entry script written for Azure ML, unchanged: Azure's own import path."""
from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    if request.method == "GET":
        return {"method": "GET", "q": request.args.get("q")}
    body = request.get_data(False)
    if body == b"teapot":
        return AMLResponse("short and stout", 418, {"Content-Type": "text/plain"})
    return AMLResponse(body.upper(), 200, {"Content-Type": "application/octet-stream"})
