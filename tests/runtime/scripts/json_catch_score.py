"""An undecorated script that parses the body itself and answers its own message when it is not JSON
(a common sample pattern): the server must hand it the text as sent."""
import json


def init():
    pass


def run(raw_data):
    try:
        data = json.loads(raw_data)
    except Exception as e:
        return {"error": f"bad input: {e}", "raw": raw_data}
    return {"got": data}
