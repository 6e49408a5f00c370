"""Model versions for the end-to-end tests: one entry script, a one-file model (factor.txt), and a
``mode`` that makes a version misbehave the way real versions do."""

from __future__ import annotations

import json
from pathlib import Path

SCRIPT = '''\
import os

import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

MODE = {mode!r}


def init():
    global factor, version
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "factor.txt")) as fh:
        factor = float(fh.read())
    version = os.environ["AZUREML_MODEL_DIR"].rstrip("/").rsplit("/", 1)[-1]


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])))
@output_schema(StandardPythonParameterType({{"version": "1", "predictions": [0.5]}}))
def run(data):
    if MODE == "raises":
        raise RuntimeError("this version is broken")
    if MODE == "production-fails" and os.environ.get("PIPELINE_PLUGIN_ENV") == "production":
        raise RuntimeError("a secret this version needs exists only in staging")
    if MODE == "breaks-schema":
        return "predictions: " + ",".join(str(float(sum(row)) * factor) for row in data)
    return {{"version": version, "predictions": [float(sum(row)) * factor for row in data]}}
'''

SAMPLE = [[1.0, 2.0], [3.0, 4.5]]


def expected(version: int) -> dict:
    return {"version": str(version), "predictions": [sum(row) * version for row in SAMPLE]}


def write_version(root: Path, version: int, mode: str = "ok") -> dict:
    """Files for one version: the model file, the entry script, sample and expected output.
    Returns the rule's ``pipeline`` keys (paths relative to ``root``)."""
    d = root / f"v{version}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "factor.txt").write_text(str(version))
    (d / "score.py").write_text(SCRIPT.format(mode=mode))
    (d / "sample.json").write_text(json.dumps({"data": SAMPLE}))
    (d / "expected.json").write_text(json.dumps(expected(version)))
    return {
        "model_file": d / "factor.txt",
        "entry_script": f"v{version}/score.py",
        "sample": f"v{version}/sample.json",
        "expect": f"v{version}/expected.json",
    }
