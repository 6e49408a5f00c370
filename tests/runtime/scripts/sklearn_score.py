"""A plain Azure ML entry script: a scikit-learn model from AZUREML_MODEL_DIR, run() gets JSON text."""
import json
import os
import pickle

model = None


def init():
    global model
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl"), "rb") as fh:
        model = pickle.load(fh)


def run(raw_data):
    data = json.loads(raw_data)["data"]
    return {"predictions": model.predict(data).tolist()}
