"""A @rawhttp script answering an image: the content type set on the response object (Flask's way)
or passed as a header."""
from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse

JPEG = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    how = request.args.get("how", "attribute")
    if how == "attribute":
        resp = AMLResponse(JPEG, 200)
        resp.mimetype = "image/jpg"
        return resp
    if how == "keyword":  # Flask's Response(..., mimetype=...): ours takes it too (Azure 1.5.1's does not)
        return AMLResponse(JPEG, 200, mimetype="image/jpg")
    return AMLResponse(JPEG, 200, {"Content-Type": "image/jpg"})
