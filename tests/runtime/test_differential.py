"""Differential test: the same score.py under azureml-inference-server-http 1.5.1 (in its own venv:
it pins packages that conflict with ours) and under our runtime give the same outputs and swagger
documents for good input. The venv is created from PyPI when missing (REPO/.cache/azml-venv, or
$PIPELINE_PLUGIN_AZML_VENV)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from .conftest import REPO, SCRIPTS, Runtime

AZURE_SERVER = "azureml-inference-server-http==1.5.1"

pytestmark = pytest.mark.slow


def azure_venv() -> Path:
    venv = Path(os.environ.get("PIPELINE_PLUGIN_AZML_VENV") or REPO / ".cache" / "azml-venv")
    if (venv / "bin" / "azmlinfsrv").exists():
        return venv
    # the same model libraries as ours, so a pickled model loads in both
    pins = [AZURE_SERVER] + [f"{p}=={version(p)}" for p in ("scikit-learn", "numpy", "pandas")]
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *pins], check=True, capture_output=True,
                       text=True, timeout=900)
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"cannot create the Azure server venv at {venv}: {exc.stderr or exc}; create it with "
                    f"`python -m venv {venv} && {venv}/bin/pip install {' '.join(pins)}`")
    return venv


@pytest.fixture(scope="module")
def venv() -> Path:
    return azure_venv()


@pytest.fixture
def both(venv, tmp_path):
    """``both(script, model_dir)`` -> (azure, ours), both ready; stopped at teardown."""
    started = []

    def start(script: str, model_dir: Path | None = None):
        env = {"AZUREML_MODEL_DIR": str(model_dir)} if model_dir else {}
        ours = Runtime(script, env)
        started.append(ours)
        azure = Runtime(script, env, python=str(venv / "bin" / "python"), cwd=tmp_path,
                        args=["--entry_script", str(SCRIPTS / script), "--worker_count", "1", "--port", "{port}"]
                        + (["--model_dir", str(model_dir)] if model_dir else []),
                        module="azureml_inference_server_http")
        started.append(azure)
        azure.wait_listening(120)  # Azure's health route answers only once init() is done
        ours.wait_ready()
        return azure, ours

    yield start
    for rt in started:
        rt.cleanup()


def assert_same_answers(azure, ours, requests):
    for method, path, kwargs in requests:
        a = azure.client.request(method, path, **kwargs)
        o = ours.client.request(method, path, **kwargs)
        assert a.status_code == o.status_code, (path, kwargs, a.text, o.text)
        assert a.headers["content-type"] == o.headers["content-type"], (a.headers, o.headers)
        if a.headers["content-type"] == "application/json":
            assert a.json() == o.json(), (kwargs, a.text, o.text)
        else:
            assert a.content == o.content
        for h in ("x-ms-run-function-failed", "x-request-id", "x-ms-request-id", "x-ms-client-request-id"):
            if h in kwargs.get("headers", {}) or h == "x-ms-run-function-failed":
                assert a.headers.get(h) == o.headers.get(h), h


def assert_same_swagger(azure, ours):
    for v in (None, "2", "3", "3.1"):
        params = {"version": v} if v else {}
        a = azure.client.get("/swagger.json", params=params)
        o = ours.client.get("/swagger.json", params=params)
        assert (a.status_code, o.status_code) == (200, 200)
        assert a.json() == o.json(), f"swagger version {v} differs"


def test_plain_sklearn_script(both, sklearn_model_dir):
    azure, ours = both("sklearn_score.py", sklearn_model_dir)
    ids = {"x-request-id": "diff-1", "x-ms-client-request-id": "client-9"}
    assert_same_answers(azure, ours, [
        ("POST", "/score", {"json": {"data": [[2.0, 1.0, 0, 0], [-2.0, -1.0, 0, 0], [0.3, 0.2, 1, 1]]}}),
        ("POST", "/score", {"json": {"data": [[0.0, 0.0, 0.0, 0.0]]}, "headers": ids}),
        ("POST", "/score", {"content": json.dumps({"data": [[1, 1, 1, 1]]}), "headers": {"x-ms-request-id": "old"}}),
    ])
    assert_same_swagger(azure, ours)


def test_inference_schema_script(both):
    azure, ours = both("schema_score.py")
    assert_same_answers(azure, ours, [
        ("POST", "/score", {"json": {"data": [[1, 2, 3], [4, 5, 6]], "frame": [{"a": 1, "b": "x"}, {"a": 5, "b": "z"}],
                                     "factor": 3}}),
        ("POST", "/score", {"json": {"data": [[0.5, 0, 0]], "frame": [{"a": 7, "b": "q"}], "factor": 1.5}}),
    ])
    assert_same_swagger(azure, ours)


def test_rawhttp_script_with_azure_imports(both):
    azure, ours = both("azure_raw_score.py")
    assert_same_answers(azure, ours, [
        ("POST", "/score", {"content": b"hello"}),
        ("POST", "/score", {"content": b"teapot"}),
        ("GET", "/score", {"params": {"q": "zebra"}}),
    ])
    assert_same_swagger(azure, ours)


def test_multiple_models_and_request_headers(both, tmp_path):
    root = tmp_path / "models"
    for name, ver, scale in (("alpha", "1", 2), ("beta", "3", 5)):
        (root / name / ver).mkdir(parents=True)
        (root / name / ver / "weights.json").write_text(json.dumps({"scale": scale}))
    azure, ours = both("multi_model_score.py", root)
    for x in (1, 4.5):
        a = azure.client.post("/score", json={"x": x}, headers={"User-Agent": "diff/1"}).json()
        o = ours.client.post("/score", json={"x": x}, headers={"User-Agent": "diff/1"}).json()
        a.pop("pid"), o.pop("pid")
        assert a == o and o["outputs"] == {"alpha:1": x * 2, "beta:3": x * 5}


def assert_same_headers(azure, ours, method, path, names, **kwargs):
    a = azure.client.request(method, path, **kwargs)
    o = ours.client.request(method, path, **kwargs)
    assert a.status_code == o.status_code, (a.text, o.text)
    for name in names:
        assert a.headers.get(name) == o.headers.get(name), name


def test_the_docs_cors_example(both, tmp_path):
    """Azure's docs' CORS script (its import line moved to azureml_inference_server_http, which the
    Azure server venv has): headers set on the AMLResponse after it is made."""
    script = tmp_path / "cors_score.py"
    script.write_text((SCRIPTS / "cors_docs_score.py").read_text().replace(
        "azureml.contrib.services", "azureml_inference_server_http.api"))
    azure, ours = both(str(script))
    assert_same_answers(azure, ours, [
        ("GET", "/score", {"params": {"a": "1", "b": "two"}}),
        ("POST", "/score", {"content": b"some body"}),
        ("OPTIONS", "/score", {}),
    ])
    cors = ["access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers", "allow"]
    for method in ("GET", "POST", "OPTIONS"):
        assert_same_headers(azure, ours, method, "/score", cors)


def test_a_streaming_script(both):
    azure, ours = both("stream_score.py")
    assert_same_answers(azure, ours, [
        ("GET", "/score", {"params": {"n": "5"}}),
        ("POST", "/score", {"content": b"", "params": {"n": "1"}}),
    ])
    assert_same_headers(azure, ours, "GET", "/score", ["transfer-encoding", "content-length"], params={"n": "3"})


def test_a_script_setting_the_mimetype(both):
    azure, ours = both("mimetype_score.py")
    assert_same_answers(azure, ours, [
        ("GET", "/score", {"params": {"how": "attribute"}}),
        ("GET", "/score", {"params": {"how": "header"}}),
    ])


def test_a_script_reading_headers_args_form_and_files(both):
    azure, ours = both("headers_score.py")
    assert_same_answers(azure, ours, [
        ("POST", "/score?a=1&a=2&b=x", {"content": b'{"k": 1}', "headers": [
            ("Content-Type", "application/json"), ("X-Multi", "a"), ("X-Multi", "b"), ("x-lower", "v")]}),
        ("POST", "/score", {"data": {"k": "v"}, "files": {"image": ("cat.png", b"\x89PNG1234", "image/png")}}),
        ("POST", "/score", {"data": {"k": "v", "n": "2"}}),
        ("GET", "/score?q=%2Fx%20y", {}),
    ])


def test_an_undecorated_script_answering_its_own_bad_json_message(both):
    azure, ours = both("json_catch_score.py")
    assert_same_answers(azure, ours, [
        ("POST", "/score", {"content": b'{"a": ', "headers": {"Content-Type": "application/json"}}),
        ("POST", "/score", {"content": b"not json at all"}),
        ("POST", "/score", {"content": b""}),
        ("POST", "/score", {"json": {"a": [1, 2]}}),
    ])
