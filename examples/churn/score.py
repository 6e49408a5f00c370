"""Azure ML style entry script for the churn example: init() once, run() per request.

Input:  {"data": [[tenure_months, monthly_charges, support_calls, month_to_month], ...]}
Output: {"predictions": [0 or 1, ...], "probabilities": [churn probability, ...]}
"""

import os
import pickle

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

try:
    from pipeline_plugin.runtime import BadInput  # answered 400 with its message
except ImportError:  # served by another server
    BadInput = ValueError

model = None


def init():
    global model
    # one model: AZUREML_MODEL_DIR is the model's folder, holding the registered file; a version
    # registered from MLflow is a model folder (MLmodel, model.pkl ...) inside it
    path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.pkl")
    if not os.path.exists(path):
        path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "model.pkl")
    with open(path, "rb") as f:
        model = pickle.load(f)


@input_schema("data", NumpyParameterType(np.array([[24.0, 70.5, 2.0, 1.0]])))
@output_schema(StandardPythonParameterType({"predictions": [0], "probabilities": [0.5]}))
def run(data):
    # NaN and infinity (JSON's NaN/Infinity, or 1e400) fit the schema but are no customer data
    if not np.isfinite(data).all():
        raise BadInput("data holds values that are not finite numbers (NaN or infinity); send finite numbers")
    probabilities = model.predict_proba(data)[:, 1]
    return {
        "predictions": [int(p >= 0.5) for p in probabilities],
        "probabilities": [round(float(p), 6) for p in probabilities],
    }
