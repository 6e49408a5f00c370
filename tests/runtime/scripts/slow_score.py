"""init() sleeps INIT_SLEEP seconds; run() sleeps the number of seconds it is sent."""
import json
import os
import time


def init():
    time.sleep(float(os.environ.get("INIT_SLEEP", "0")))


def run(raw_data):
    seconds = float(json.loads(raw_data)["sleep"])
    try:
        time.sleep(seconds)
    except Exception:  # a broad handler must not hide a scoring timeout
        return {"slept": "interrupted"}
    return {"slept": seconds, "pid": os.getpid()}
