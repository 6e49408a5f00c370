"""A @rawhttp entry script: binary in, binary out, custom status and headers."""

from pipeline_plugin.runtime import AMLRequest, AMLResponse, rawhttp


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    if request.method == "GET":
        return {"method": "GET", "path": request.path, "args": dict(request.args),
                "x_test": request.headers.get("X-Test")}
    if request.method != "POST":
        return AMLResponse(f"{request.method} is not supported", 405)
    if request.files:
        upload = request.files["image"]
        return {"filename": upload.filename, "size": len(upload.read()), "form": dict(request.form)}
    body = request.get_data(False)
    return AMLResponse(body[::-1], 201, {"Content-Type": "application/octet-stream",
                                         "X-Body-Length": str(len(body))})
