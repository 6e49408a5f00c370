"""run() refuses an input it cannot score with BadInput: the client gets 400 and the message."""

from pipeline_plugin.runtime import BadInput


def init():
    pass


def run(raw_data):
    import json

    body = json.loads(raw_data)
    if not isinstance(body.get("data"), list):
        raise BadInput("data must be a list of rows, e.g. {\"data\": [[1, 2]]}")
    return {"rows": len(body["data"])}
