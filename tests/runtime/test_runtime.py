"""The scoring runtime over real HTTP: a subprocess per scenario, the scripts under scripts/."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import os
import time
import uuid

import httpx
import pytest

from .conftest import REPO, SCRIPTS

JSON = {"content-type": "application/json"}
SCHEMA_INPUT = {"data": [[1, 2, 3], [4, 5, 6]], "frame": [{"a": 1, "b": "x"}, {"a": 5, "b": "z"}], "factor": 3}


def test_plain_script_scores_json_and_answers_health(runtime, sklearn_model_dir):
    rt = runtime("sklearn_score.py", {"AZUREML_MODEL_DIR": str(sklearn_model_dir)})
    r = rt.client.post("/score", json={"data": [[2.0, 1.0, 0, 0], [-2.0, -1.0, 0, 0]]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [2, 0]}
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-ms-run-function-failed"] == "False"
    assert float(r.headers["x-ms-run-fn-exec-ms"]) >= 0
    health = rt.client.get("/")
    assert (health.status_code, health.text) == (200, "Healthy")
    assert rt.client.get("/readyz").status_code == 200
    assert rt.client.get("/nope").status_code == 404
    assert rt.client.post("/").status_code == 405
    assert rt.client.put("/score", content=b"{}").status_code == 405


def test_get_score_passes_query_parameters_as_json(runtime):
    rt = runtime("slow_score.py")
    r = rt.client.get("/score", params={"sleep": "0"})
    assert r.status_code == 200, r.text
    assert r.json()["slept"] == 0


def test_one_scoring_thread_runs_init_and_run_on_the_same_thread(runtime):
    rt = runtime("sqlite_score.py", {"PIPELINE_PLUGIN_SCORING_THREADS": "1"})
    r = rt.client.post("/score", json={"k": 2})
    assert (r.status_code, r.json()) == (200, {"sum": 12})


def test_request_ids_are_echoed_or_generated(runtime):
    rt = runtime("slow_score.py")
    r = rt.client.post("/score", json={"sleep": 0})
    generated = r.headers["x-request-id"]
    assert uuid.UUID(generated)
    assert r.headers["x-ms-request-id"] == generated
    r = rt.client.post("/score", json={"sleep": 0}, headers={"x-request-id": "req-1", "x-ms-client-request-id": "c-1"})
    assert r.headers["x-request-id"] == "req-1"
    assert r.headers["x-ms-client-request-id"] == "c-1"
    assert r.headers["x-ms-request-id"] == "c-1"
    r = rt.client.post("/score", json={"sleep": 0}, headers={"x-ms-request-id": "legacy-7"})
    assert r.headers["x-ms-request-id"] == "legacy-7"
    assert r.headers["x-ms-client-request-id"] == "legacy-7"
    assert uuid.UUID(r.headers["x-request-id"])
    r = rt.client.get("/", headers={"x-request-id": "health-1"})
    assert r.headers["x-request-id"] == "health-1"
    r = rt.client.post("/score", json={"sleep": 0}, headers={"x-request-id": "x" * 101})
    assert r.status_code == 431
    assert "100" in r.json()["message"]


def test_malformed_and_empty_json_are_400(runtime):
    rt = runtime("slow_score.py")
    r = rt.client.post("/score", content=b'{"sleep": ', headers=JSON)
    assert r.status_code == 400
    assert "could not be decoded as JSON" in r.json()["message"]
    assert r.json()["request_id"] == r.headers["x-request-id"]
    r = rt.client.post("/score", content=b"", headers=JSON)
    assert r.status_code == 400
    assert "empty" in r.json()["message"]
    r = rt.client.post("/score", content=b"\xff\xfe", headers=JSON)
    assert r.status_code == 400
    assert "UTF-8" in r.json()["message"]


def test_schema_script_decodes_numpy_pandas_and_python_inputs(runtime):
    rt = runtime("schema_score.py")
    r = rt.client.post("/score", json=SCHEMA_INPUT)
    assert r.status_code == 200, r.text
    assert r.json() == {"row_sums": [18.0, 45.0], "a_total": 6, "labels": ["x", "z"]}


@pytest.mark.parametrize("change, param, words", [
    ({"data": [[1, 2], [3, 4]]}, "data", "dimension"),
    ({"frame": [{"a": "not a number", "b": "x"}]}, "frame", "column 'a'"),
    ({"factor": "three"}, "factor", "Expected"),
])
def test_input_contradicting_the_schema_is_400_naming_the_parameter(runtime, change, param, words):
    rt = runtime("schema_score.py")
    r = rt.client.post("/score", json={**SCHEMA_INPUT, **change})
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert f"parameter {param!r}" in message and words in message
    assert r.headers["x-ms-run-function-failed"] == "False"


def test_exception_inside_a_schema_decorated_run_is_still_500(runtime):
    rt = runtime("schema_score.py")
    r = rt.client.post("/score", json={**SCHEMA_INPUT, "factor": -1})
    assert r.status_code == 500
    assert "ValueError" in r.json()["message"] and "schema" not in r.json()["message"]


def test_schema_script_rejects_missing_parameters_wrong_shapes_and_content_types(runtime):
    rt = runtime("schema_score.py")
    r = rt.client.post("/score", json={"data": SCHEMA_INPUT["data"], "factor": 1})
    assert r.status_code == 400 and "'frame'" in r.json()["message"]
    r = rt.client.post("/score", json=[1, 2, 3])
    assert r.status_code == 400 and "dictionary" in r.json()["message"]
    r = rt.client.post("/score", content=json.dumps(SCHEMA_INPUT), headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_swagger_documents_come_from_the_decorators(runtime):
    rt = runtime("schema_score.py")
    v2 = rt.client.get("/swagger.json").json()
    assert v2 == rt.client.get("/swagger.json", params={"version": "2"}).json()
    assert v2["swagger"] == "2.0"
    props = v2["definitions"]["ServiceInput"]["properties"]
    assert set(props) == {"data", "frame", "factor"}
    assert props["data"]["type"] == "array" and props["factor"]["type"] == "number"
    assert v2["definitions"]["ServiceInput"]["example"]["factor"] == 2.0
    assert v2["definitions"]["ServiceOutput"]["type"] == "object"
    v3 = rt.client.get("/swagger.json", params={"version": "3"}).json()
    assert v3["openapi"] == "3.0.3"
    assert set(v3["components"]["schemas"]["ServiceInput"]["properties"]) == {"data", "frame", "factor"}
    assert rt.client.get("/swagger.json", params={"version": "3.1"}).json()["openapi"] == "3.1.0"
    r = rt.client.get("/swagger.json", params={"version": "7"})
    assert r.status_code == 404 and "not valid" in r.json()["message"]


def test_swagger_for_an_undecorated_script_and_a_user_supplied_document(runtime, tmp_path):
    rt = runtime("slow_score.py")
    v2 = rt.client.get("/swagger.json").json()
    assert v2["definitions"]["ServiceInput"] == {"type": "object", "example": {}}
    (tmp_path / "swagger3.json").write_text(json.dumps({"openapi": "3.0.0", "info": {"title": "mine"}}))
    (tmp_path / "score.py").write_text((SCRIPTS / "slow_score.py").read_text())
    rt = runtime("", {"AML_APP_ROOT": str(tmp_path), "AZUREML_ENTRY_SCRIPT": "score.py"})
    assert rt.client.get("/swagger.json", params={"version": "3"}).json()["info"]["title"] == "mine"
    assert rt.client.get("/swagger.json").json()["swagger"] == "2.0"


def test_exception_in_run_is_500_with_request_id_and_logged_traceback(runtime):
    rt = runtime("failing_score.py")
    r = rt.client.post("/score", json={"x": 1}, headers={"x-request-id": "boom-42"})
    assert r.status_code == 500
    body = r.json()
    assert body["request_id"] == "boom-42" and "boom-42" in body["message"] and "ValueError" in body["message"]
    assert "secret detail" not in r.text  # the exception text stays in the log
    assert r.headers["x-ms-run-function-failed"] == "True"
    time.sleep(0.2)
    logs = rt.logs()
    assert "boom-42" in logs and "Traceback" in logs and "secret detail that must stay in the log" in logs


def test_a_script_refusing_its_input_with_bad_input_is_400_with_the_message(runtime):
    rt = runtime("bad_input_score.py")
    r = rt.client.post("/score", json={"data": "nope"}, headers={"x-request-id": "bad-7"})
    assert r.status_code == 400, r.text
    assert r.json()["message"] == 'data must be a list of rows, e.g. {"data": [[1, 2]]}'
    assert r.json()["request_id"] == "bad-7"
    assert rt.client.post("/score", json={"data": [[1], [2]]}).json() == {"rows": 2}


def test_scoring_timeout_on_the_event_loop_is_504_even_if_run_catches_exceptions(runtime):
    rt = runtime("slow_score.py", {"SCORING_TIMEOUT_MS": "300", "PIPELINE_PLUGIN_SCORING_THREADS": "0"})
    started = time.monotonic()
    r = rt.client.post("/score", json={"sleep": 5.0})
    assert r.status_code == 504, r.text
    assert time.monotonic() - started < 2  # interrupted, not waited out
    assert "300 ms" in r.json()["message"]
    assert r.headers["x-ms-run-function-failed"] == "True"
    assert rt.client.post("/score", json={"sleep": 0}).status_code == 200


def test_scoring_timeout_in_a_scoring_thread_keeps_health_responsive(runtime):
    rt = runtime("slow_score.py", {"SCORING_TIMEOUT_MS": "300", "PIPELINE_PLUGIN_SCORING_THREADS": "1"})
    result = {}
    t = threading.Thread(target=lambda: result.update(r=httpx.post(f"{rt.url}/score", json={"sleep": 1.0})))
    started = time.monotonic()
    t.start()
    time.sleep(0.1)
    assert rt.client.get("/").text == "Healthy"  # answered while run() sleeps
    t.join()
    assert result["r"].status_code == 504
    assert time.monotonic() - started < 0.9
    time.sleep(0.8)  # the abandoned run() finishes in its thread
    assert rt.client.post("/score", json={"sleep": 0}).status_code == 200


def test_by_default_health_and_readiness_answer_while_run_works(runtime):
    """A container HEALTHCHECK or Kubernetes probe during a long run() must not time out: with the
    default settings the worker answers them at once."""
    rt = runtime("slow_score.py")
    t = threading.Thread(target=lambda: httpx.post(f"{rt.url}/score", json={"sleep": 1.5}, timeout=10))
    t.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert rt.client.get("/").text == "Healthy" and rt.client.get("/readyz").status_code == 200
    assert time.monotonic() - started < 0.5
    t.join()


def test_body_over_the_limit_is_413(runtime):
    rt = runtime("slow_score.py", {"PIPELINE_PLUGIN_MAX_BODY_BYTES": "1000"})
    big = json.dumps({"sleep": 0, "pad": "x" * 2000}).encode()
    assert rt.client.post("/score", content=big, headers=JSON).status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(big), 500):
            yield big[i:i + 500]

    r = httpx.post(f"{rt.url}/score", content=chunks(), headers=JSON)
    assert r.status_code == 413
    assert "1000" in r.json()["message"]
    assert rt.client.post("/score", json={"sleep": 0, "pad": "x" * 100}).status_code == 200


def test_key_auth_guards_score_but_not_health(runtime, tmp_path):
    rt = runtime("slow_score.py", {"PIPELINE_PLUGIN_SCORING_KEYS": "k-primary,k-secondary"})
    assert rt.client.post("/score", json={"sleep": 0}).status_code == 401
    r = rt.client.post("/score", json={"sleep": 0}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert rt.client.post("/score", json={"sleep": 0}, headers={"Authorization": "k-primary"}).status_code == 401
    for key in ("k-primary", "k-secondary"):
        r = rt.client.post("/score", json={"sleep": 0}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    for path in ("/", "/readyz", "/swagger.json", "/metrics"):
        assert rt.client.get(path).status_code == 200
    assert "k-primary" not in rt.logs()

    keyfile = tmp_path / "keys"
    keyfile.write_text("from-file\n")
    rt = runtime("slow_score.py", {"PIPELINE_PLUGIN_SCORING_KEYS_FILE": str(keyfile)})
    assert rt.client.post("/score", json={"sleep": 0}).status_code == 401
    assert rt.client.post("/score", json={"sleep": 0}, headers={"Authorization": "Bearer from-file"}).status_code == 200

    # rotation: a new file (as a Kubernetes Secret volume swaps it) is taken within about a second
    keyfile.write_text("rotated-1\nrotated-2\n")
    os.utime(keyfile, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime even on coarse clocks

    def status(key):
        return rt.client.post("/score", json={"sleep": 0}, headers={"Authorization": f"Bearer {key}"}).status_code

    deadline = time.monotonic() + 10
    while status("rotated-1") != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status("rotated-1") == 200 and status("rotated-2") == 200 and status("from-file") == 401
    # an emptied file keeps the keys in use (never an open service), and says so
    keyfile.write_text("")
    os.utime(keyfile, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    time.sleep(1.2)
    assert status("rotated-1") == 200 and rt.client.post("/score", json={"sleep": 0}).status_code == 401
    time.sleep(0.2)
    assert "holds no key; keeping the keys in use" in rt.logs() and "rotated-1" not in rt.logs()


def test_health_and_readyz_are_503_until_init_succeeded_while_livez_answers(runtime):
    """As with Azure's server, a client (or deployment check) that waits for GET / and then scores
    must not get a 503: GET / says Healthy only once init() succeeded; GET /livez answers meanwhile."""
    rt = runtime("slow_score.py", {"INIT_SLEEP": "2"}, ready=False)
    rt.wait_listening()
    assert rt.client.get("/livez").status_code == 200
    for path in ("/", "/readyz"):
        r = rt.client.get(path)
        assert r.status_code == 503 and "init()" in r.json()["message"]
    assert rt.client.post("/score", json={"sleep": 0}).status_code == 503
    deadline = time.monotonic() + 30
    while rt.client.get("/").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rt.client.get("/").text == "Healthy"
    assert rt.client.post("/score", json={"sleep": 0}).status_code == 200
    assert rt.client.get("/livez").status_code == 200


def test_init_failure_stops_the_process_with_the_traceback(runtime, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.bin").write_text("x")
    rt = runtime("init_fails_score.py", {"AZUREML_MODEL_DIR": str(tmp_path / "m")}, ready=False)
    assert rt.proc.wait(30) == 3
    logs = rt.logs()
    assert "init() of the entry script" in logs and "model file is corrupt" in logs and "model.bin" in logs


def test_metrics_count_requests_by_status_latency_and_in_flight(runtime):
    rt = runtime("slow_score.py", {"PIPELINE_PLUGIN_SCORING_THREADS": "1"})  # /metrics answers during run()
    for _ in range(3):
        rt.client.post("/score", json={"sleep": 0})
    rt.client.post("/score", content=b"{", headers=JSON)
    slow = threading.Thread(target=lambda: httpx.post(f"{rt.url}/score", json={"sleep": 1.0}, timeout=10))
    slow.start()
    time.sleep(0.4)
    text = rt.client.get("/metrics").text
    slow.join()
    assert 'pipeline_plugin_requests_total{route="/score",status="200"} 3' in text
    assert 'pipeline_plugin_requests_total{route="/score",status="400"} 1' in text
    assert "pipeline_plugin_score_in_flight 1" in text
    assert 'pipeline_plugin_score_duration_seconds_bucket{le="+Inf"} 4' in text
    text = rt.client.get("/metrics").text
    assert "pipeline_plugin_score_in_flight 0" in text
    assert "pipeline_plugin_score_duration_seconds_count 5" in text


@pytest.mark.parametrize("workers, threads", [(1, "0"), (2, "0"), (1, "1")])
def test_sigterm_lets_in_flight_requests_finish(runtime, workers, threads):
    rt = runtime("slow_score.py", {"PIPELINE_PLUGIN_SCORING_THREADS": threads}, workers=workers)
    result = {}

    def slow():
        result["r"] = httpx.post(f"{rt.url}/score", json={"sleep": 1.5}, timeout=10)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    rt.proc.terminate()
    t.join()
    assert result["r"].status_code == 200 and result["r"].json()["slept"] == 1.5
    assert rt.proc.wait(10) == 0


def test_workers_each_run_init_and_metrics_add_up(runtime, tmp_path):
    root = tmp_path / "models"
    for name, version, scale in (("alpha", "1", 2), ("alpha", "2", 3), ("beta", "7", 10)):
        (root / name / version).mkdir(parents=True)
        (root / name / version / "weights.json").write_text(json.dumps({"scale": scale}))
    rt = runtime("multi_model_score.py", {"AZUREML_MODEL_DIR": str(root)}, workers=2)
    pids = set()
    for _ in range(40):
        with httpx.Client(base_url=rt.url) as fresh:  # a new connection each time
            r = fresh.post("/score", json={"x": 5}, headers={"User-Agent": "probe/1"})
        assert r.status_code == 200
        assert r.json()["outputs"] == {"alpha:1": 10, "alpha:2": 15, "beta:7": 50}
        assert r.json()["user_agent"] == "probe/1"
        pids.add(r.json()["pid"])
    assert len(pids) == 2
    assert 'pipeline_plugin_requests_total{route="/score",status="200"} 40' in rt.client.get("/metrics").text


@pytest.mark.parametrize("reuseport", ["1", "0"])
def test_a_burst_of_connections_spreads_over_the_workers(runtime, reuseport):
    """32 connections opened together (as wrk does) must not all land on one worker: with a socket
    per worker (SO_REUSEPORT) the kernel spreads them; /metrics shows each worker's share."""
    import socket as socketlib

    rt = runtime("slow_score.py", {"PIPELINE_PLUGIN_REUSEPORT": reuseport}, workers=2)
    request = (b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 12\r\n\r\n{\"sleep\": 0}")
    conns = [socketlib.create_connection(("127.0.0.1", rt.port)) for _ in range(32)]
    try:
        for c in conns:
            c.sendall(request)
        pids = set()
        for c in conns:
            data = b""
            while b"}" not in data.split(b"\r\n\r\n", 1)[-1]:
                data += c.recv(4096)
            pids.add(json.loads(data.split(b"\r\n\r\n", 1)[1])["pid"])
    finally:
        for c in conns:
            c.close()
    shares = [float(line.rsplit(" ", 1)[1]) for line in rt.client.get("/metrics").text.splitlines()
              if line.startswith("pipeline_plugin_worker_score_requests_total{")]
    assert len(shares) == 2 and sum(shares) == 32
    if reuseport == "1":
        assert len(pids) == 2 and min(shares) >= 4, shares  # 4 or fewer of 32: p < 1e-5 for a fair hash


def test_rawhttp_gets_the_request_and_returns_status_and_headers(runtime):
    rt = runtime("raw_score.py")
    r = rt.client.post("/score?x=1", content=b"\x00\x01binary", headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201
    assert r.content == b"yranib\x01\x00"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-body-length"] == "8"
    r = rt.client.get("/score", params={"q": "cat", "n": "2"}, headers={"X-Test": "yes"})
    assert r.json() == {"method": "GET", "path": "/score", "args": {"q": "cat", "n": "2"}, "x_test": "yes"}
    r = rt.client.post("/score", files={"image": ("cat.png", b"\x89PNG1234", "image/png")}, data={"k": "v"})
    assert r.json() == {"filename": "cat.png", "size": 8, "form": {"k": "v"}}
    assert rt.client.request("OPTIONS", "/score").status_code == 405  # passed to run(), which refuses


def test_cors_allows_configured_origins_only(runtime):
    rt = runtime("raw_score.py", {"AML_CORS_ORIGINS": "https://app.example, https://other.example"})
    r = rt.client.post("/score", content=b"ab", headers={"Origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    r = rt.client.post("/score", content=b"ab", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    r = rt.client.request("OPTIONS", "/score", headers={
        "Origin": "https://other.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://other.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "content-type"


def test_cors_preflight_needs_no_key_but_the_request_does(runtime):
    rt = runtime("slow_score.py", {"AML_CORS_ORIGINS": "*", "PIPELINE_PLUGIN_SCORING_KEYS": "k1"})
    r = rt.client.request("OPTIONS", "/score", headers={"Origin": "https://x.example",
                                                          "Access-Control-Request-Method": "POST"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    r = rt.client.post("/score", json={"sleep": 0}, headers={"Origin": "https://x.example"})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "*"


def test_azure_import_path_works_without_azure_installed(runtime):
    rt = runtime("azure_raw_score.py")
    r = rt.client.post("/score", content=b"abc")
    assert (r.status_code, r.content) == (200, b"ABC")
    r = rt.client.post("/score", content=b"teapot")
    assert (r.status_code, r.text) == (418, "short and stout")
    assert rt.client.get("/score?q=z").json() == {"method": "GET", "q": "z"}


def test_older_azureml_contrib_services_import_path_works(runtime, tmp_path):
    script = (SCRIPTS / "azure_raw_score.py").read_text()
    script = script.replace("azureml_inference_server_http.api", "azureml.contrib.services")
    (tmp_path / "score.py").write_text(script)
    rt = runtime("", {"AZUREML_ENTRY_SCRIPT": str(tmp_path / "score.py")})
    assert rt.client.post("/score", content=b"xyz").content == b"XYZ"


def test_source_directory_and_flags(runtime, tmp_path):
    src = tmp_path / "app" / "src"
    src.mkdir(parents=True)
    (src / "helper.py").write_text("def scale(x):\n    return x * 3\n")
    (src / "score.py").write_text(
        "import json\nfrom helper import scale\n\ndef init():\n    pass\n\n"
        "def run(raw):\n    return scale(json.loads(raw)['x'])\n")
    rt = runtime("", {"AML_APP_ROOT": str(tmp_path / "app"), "AZUREML_SOURCE_DIRECTORY": "src",
                      "AZUREML_ENTRY_SCRIPT": "score.py"})
    assert rt.client.post("/score", json={"x": 2}).json() == 6
    rt = runtime("", {"AZUREML_ENTRY_SCRIPT": ""}, args=["--entry-script", str(src / "score.py")], cwd=src)
    assert rt.client.post("/score", json={"x": 1}).json() == 3


@pytest.mark.parametrize("env, words", [
    ({"AZUREML_ENTRY_SCRIPT": ""}, "AZUREML_ENTRY_SCRIPT"),
    ({"AZUREML_ENTRY_SCRIPT": "missing.py"}, "missing.py"),
    ({"WORKER_COUNT": "two"}, "WORKER_COUNT='two'"),
    ({"SCORING_TIMEOUT_MS": "0"}, "SCORING_TIMEOUT_MS=0"),
    ({"PIPELINE_PLUGIN_SCORING_KEYS_FILE": "/nonexistent/keys"}, "PIPELINE_PLUGIN_SCORING_KEYS_FILE"),
])
def test_bad_settings_fail_at_start_naming_the_variable(env, words):
    base = {"PATH": "/usr/bin:/bin", "AZUREML_ENTRY_SCRIPT": str(SCRIPTS / "slow_score.py")}
    r = subprocess.run([sys.executable, "-m", "pipeline_plugin.runtime"], env={**base, **env}, cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert words in r.stderr and r.stderr.startswith("error: ")


def test_runtime_imports_nothing_else_from_pipeline_plugin():
    code = ("import sys, pipeline_plugin.runtime.server, pipeline_plugin.runtime.app, pipeline_plugin.runtime.__main__;"
            "print(sorted(m for m in sys.modules if m.startswith('pipeline_plugin')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules = eval(out)  # a printed list of module names
    assert [m for m in modules if m != "pipeline_plugin" and not m.startswith("pipeline_plugin.runtime")] == []


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_accepted_connections_get_tcp_nodelay(loop):
    """Without TCP_NODELAY a response written as headers + body waits 40 ms for a delayed ACK
    (uvicorn issue 3149): the runtime's listening socket must make both event loops set it."""
    import asyncio
    import pickle
    import socket
    from multiprocessing.reduction import ForkingPickler

    from pipeline_plugin.runtime.server import bind

    listener = bind("127.0.0.1", 0)
    # workers receive the socket pickled (spawn): what they rebuild must still say TCP
    rebuilt = pickle.loads(bytes(ForkingPickler.dumps(listener)))
    seen = {}

    async def main():
        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                sock = transport.get_extra_info("socket")
                seen["nodelay"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

        server = await asyncio.get_running_loop().create_server(Probe, sock=rebuilt)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        for _ in range(100):
            if "nodelay" in seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
    listener.close()
    assert seen == {"nodelay": 1}


def test_asyncio_loop_serves_too(runtime):
    rt = runtime("slow_score.py", {"PIPELINE_PLUGIN_LOOP": "asyncio"})
    with httpx.Client(base_url=rt.url) as c:  # one keep-alive connection, several requests
        for _ in range(5):
            assert c.post("/score", json={"sleep": 0}).status_code == 200


def test_runs_without_inference_schema_installed(runtime, tmp_path):
    """Lean images may lack inference-schema: undecorated scripts and their swagger still work."""
    blocker = tmp_path / "blocker" / "inference_schema"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('inference_schema is not installed here')\n")
    rt = runtime("slow_score.py", {"PYTHONPATH": str(tmp_path / "blocker")})
    assert rt.client.post("/score", json={"sleep": 0}).json()["slept"] == 0
    assert rt.client.get("/swagger.json").json()["definitions"]["ServiceInput"] == {"type": "object", "example": {}}
