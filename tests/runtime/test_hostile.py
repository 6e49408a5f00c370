"""Hostile clients: input built to break the server must get a 400 naming the problem (and be counted),
a client that never finishes its body must not hold a shutdown forever, and numbers that fit the schema
but are not finite must not reach the model as if they were data."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

from .conftest import REPO, make_sklearn_model

DEEP_BODY = "[" * 100_000 + "]" * 100_000
DEEP_QUERY = "[" * 3_000 + "]" * 3_000
JSON = {"Content-Type": "application/json"}
SCHEMA_INPUT = {"data": [[1, 2, 3], [4, 5, 6]], "frame": [{"a": 1, "b": "x"}, {"a": 5, "b": "z"}], "factor": 3}


def _assert_too_deep(r, where: str) -> None:
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert where in message and "nested too deeply" in message, message


def test_json_nested_100000_deep_is_a_400_for_every_kind_of_script(runtime):
    # the runtime decodes the body (@input_schema)
    rt = runtime("schema_score.py")
    _assert_too_deep(rt.client.post("/score", content=DEEP_BODY, headers=JSON), "POST body")
    _assert_too_deep(rt.client.post("/score", content=json.dumps({**SCHEMA_INPUT, "pad": 1})[:-1] + ", \"x\": "
                                    + DEEP_BODY + "}", headers=JSON), "POST body")
    assert rt.client.post("/score", json=SCHEMA_INPUT).status_code == 200  # the worker is fine
    metrics = rt.client.get("/metrics").text
    assert 'pipeline_plugin_requests_total{route="/score",status="400"} 2' in metrics

    # the script decodes the text it is handed (undecorated run)
    rt = runtime("slow_score.py")
    _assert_too_deep(rt.client.post("/score", content=DEEP_BODY, headers=JSON), "request body")
    assert rt.client.post("/score", json={"sleep": 0}).status_code == 200
    assert 'route="/score",status="400"} 1' in rt.client.get("/metrics").text


def test_a_3000_deep_json_value_in_a_get_query_is_a_400(runtime):
    for script in ("slow_score.py", "schema_score.py"):
        rt = runtime(script)
        r = rt.client.get("/score", params={"data": DEEP_QUERY})
        _assert_too_deep(r, "query parameter 'data'")
        assert 'route="/score",status="400"} 1' in rt.client.get("/metrics").text


def test_sigterm_with_an_unfinished_request_body_exits_within_the_shutdown_timeout(runtime):
    rt = runtime("slow_score.py", {"PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS": "1000"})
    with socket.create_connection(("127.0.0.1", rt.port)) as sock:
        sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"sleep\": ")  # and never the rest
        time.sleep(0.3)
        started = time.monotonic()
        rt.proc.terminate()
        assert rt.proc.wait(15) == 0
        took = time.monotonic() - started
    assert 0.9 <= took < 5, took
    assert "timeout graceful shutdown exceeded" in rt.logs()


def test_the_shutdown_timeout_defaults_to_a_few_seconds_more_than_the_scoring_timeout(tmp_path):
    from pipeline_plugin.runtime import config

    script = tmp_path / "score.py"
    script.write_text("def init(): pass\ndef run(x): return x\n")
    base = {"AZUREML_ENTRY_SCRIPT": str(script)}
    assert config.load(base).shutdown_timeout_ms == 65_000
    assert config.load({**base, "SCORING_TIMEOUT_MS": "2000"}).shutdown_timeout_ms == 7_000
    assert config.load({**base, "PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS": "500"}).shutdown_timeout_ms == 500


NOT_FINITE = ["[[NaN, 1.0, 2.0, 1.0]]", "[[1e400, 1.0, 2.0, 1.0]]", "[[1.0, -Infinity, 2.0, 1.0]]"]


def test_the_example_model_answers_400_to_numbers_that_are_not_finite(runtime):
    rt = runtime(str(REPO / "examples" / "churn" / "score.py"),
                 {"AZUREML_MODEL_DIR": str(REPO / "examples" / "churn")})
    good = rt.client.post("/score", content=(REPO / "examples" / "churn" / "sample.json").read_bytes(), headers=JSON)
    assert good.status_code == 200, good.text
    for rows in NOT_FINITE:
        r = rt.client.post("/score", content='{"data": %s}' % rows, headers=JSON)
        assert r.status_code == 400, (rows, r.text)
        assert "not finite" in r.json()["message"]


def test_the_no_code_sklearn_scorer_answers_400_to_numbers_that_are_not_finite(runtime, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    shutil.copyfile(REPO / "pipeline_plugin" / "builders" / "scorers" / "mlflow_sklearn.py", app / "score.py")
    (app / "pipeline_plugin_scorer.json").write_text(json.dumps(
        {"model_folder": "m", "pickled_model": "model.pkl", "serialization_format": "pickle"}))
    make_sklearn_model(tmp_path / "models" / "m")
    rt = runtime(str(app / "score.py"), {"AZUREML_MODEL_DIR": str(tmp_path / "models")})
    assert rt.client.post("/score", json={"data": [[2.0, 1.0, 0, 0]]}).json() == [2]
    for rows in NOT_FINITE:
        for body in ('{"data": %s}' % rows, '{"input_data": {"columns": ["a", "b", "c", "d"], "data": %s}}' % rows):
            r = rt.client.post("/score", content=body, headers=JSON)
            assert r.status_code == 400, (body, r.text)
            assert "not finite" in r.json()["message"]


def test_the_no_code_onnx_scorer_refuses_numbers_that_are_not_finite(tmp_path, monkeypatch):
    """The ONNX scorer's check (onnxruntime is not installed here, so the check is called directly)."""
    import importlib.util
    import sys
    import types

    import numpy as np
    import pytest

    from pipeline_plugin.runtime import BadInput

    shutil.copyfile(REPO / "pipeline_plugin" / "builders" / "scorers" / "onnx_model.py", tmp_path / "score.py")
    (tmp_path / "pipeline_plugin_scorer.json").write_text('{"model_file": "model.onnx"}')
    monkeypatch.setitem(sys.modules, "onnxruntime", types.ModuleType("onnxruntime"))
    spec = importlib.util.spec_from_file_location("onnx_scorer_under_test", tmp_path / "score.py")
    scorer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scorer)

    scorer._check_finite({"x": np.array([[1.0, 2.0]], dtype=np.float32), "ids": np.array([[1, 2]])})
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(BadInput, match="'x' holds 1 value"):
            scorer._check_finite({"x": np.array([[1.0, bad]], dtype=np.float32)})
