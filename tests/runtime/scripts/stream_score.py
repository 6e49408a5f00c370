"""A @rawhttp script streaming its answer (Azure's streaming pattern): run() returns an AMLResponse
around a generator, which the server sends chunked as it yields."""
import time

from azureml_inference_server_http.api.aml_request import AMLRequest, rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    n = int(request.args.get("n", "3"))
    delay = float(request.args.get("delay", "0"))

    def tokens():
        for i in range(n):
            if i:
                time.sleep(delay)
            yield f"token-{i}\n"

    return AMLResponse(tokens(), 200, {"Content-Type": "text/plain"})
