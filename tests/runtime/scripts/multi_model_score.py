"""Several models: AZUREML_MODEL_DIR holds <name>/<version>/; request_headers is passed when asked for."""
import json
import os

models = {}


def init():
    root = os.environ["AZUREML_MODEL_DIR"]
    for name in sorted(os.listdir(root)):
        for version in sorted(os.listdir(os.path.join(root, name))):
            with open(os.path.join(root, name, version, "weights.json")) as fh:
                models[f"{name}:{version}"] = json.load(fh)["scale"]


def run(raw_data, request_headers):
    x = json.loads(raw_data)["x"]
    return {"outputs": {key: x * scale for key, scale in models.items()},
            "user_agent": request_headers.get("User-Agent"), "pid": os.getpid()}
