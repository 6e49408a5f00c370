"""Entry scripts written for Azure ML run unchanged: AMLRequest/AMLResponse behave as Flask's (they are
werkzeug's wrappers), run() gets what azureml-inference-server-http hands it."""

from __future__ import annotations

import time

ORIGIN = "http://www.example.com"


def test_the_docs_cors_example_sets_headers_on_the_response_for_every_method(runtime):
    rt = runtime("cors_docs_score.py")
    r = rt.client.get("/score", params={"a": "1"})
    assert (r.status_code, r.text) == (200, "/score?a=1")  # request.full_path, as Flask's
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["allow"] == "OPTIONS, GET, POST"
    assert r.headers["content-type"] == "text/html; charset=utf-8"  # Flask's default
    r = rt.client.post("/score", content=b"payload")
    assert (r.status_code, r.content) == (200, b"payload")
    assert r.headers["access-control-allow-origin"] == ORIGIN
    r = rt.client.request("OPTIONS", "/score", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-methods"] == "OPTIONS, GET, POST"
    assert r.headers["access-control-allow-headers"] == "*"
    assert r.headers["x-ms-run-function-failed"] == "False"


def test_a_generator_response_is_streamed_chunked_as_it_is_produced(runtime):
    rt = runtime("stream_score.py")
    r = rt.client.get("/score", params={"n": "4"})
    assert r.status_code == 200 and r.text == "token-0\ntoken-1\ntoken-2\ntoken-3\n"
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["transfer-encoding"] == "chunked" and "content-length" not in r.headers
    started = time.monotonic()
    with rt.client.stream("GET", "/score", params={"n": "3", "delay": "0.6"}) as r:
        chunks = r.iter_text()
        assert next(chunks) == "token-0\n"
        first = time.monotonic() - started
        rest = "".join(chunks)
    assert first < 0.5 <= time.monotonic() - started  # the first token came before the generator finished
    assert rest == "token-1\ntoken-2\n"
    # health stays responsive and the next request is served
    assert rt.client.get("/score", params={"n": "1"}).text == "token-0\n"


def test_a_client_leaving_a_stream_stops_the_generator_and_frees_the_scoring_thread(runtime):
    import socket

    rt = runtime("stream_score.py")  # one scoring thread (the default)
    with socket.create_connection(("127.0.0.1", rt.port)) as sock:
        sock.sendall(b"GET /score?n=100&delay=0.1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"token-0" in sock.recv(4096) or b"token-0" in sock.recv(4096)
    time.sleep(0.3)
    started = time.monotonic()
    assert rt.client.get("/score", params={"n": "1"}).text == "token-0\n"
    assert time.monotonic() - started < 2  # not after the abandoned stream's 10 s
    time.sleep(0.2)
    assert "the client went away" in rt.logs()


def test_the_response_mimetype_is_the_content_type_sent(runtime):
    rt = runtime("mimetype_score.py")
    for how in ("attribute", "keyword", "header"):
        r = rt.client.get("/score", params={"how": how})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/jpg", how
        assert r.content.startswith(b"\xff\xd8")


def test_request_headers_args_form_and_files_are_flasks(runtime):
    rt = runtime("headers_score.py")
    r = rt.client.post("/score?a=1&a=2&b=x", content=b'{"k": 1}',
                       headers=[("Content-Type", "application/json"), ("X-Multi", "a"), ("X-Multi", "b"),
                                ("x-lower", "v")])
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["names"] == ["Content-Length", "Content-Type", "X-Lower", "X-Multi"]  # Flask's casing
    assert seen["content_type"] == "application/json"  # dict(request.headers)["Content-Type"]
    assert seen["multi"] == "a,b"  # as gunicorn joins a repeated header
    assert seen["args"] == {"a": ["1", "2"], "b": ["x"]}
    assert seen["data_length"] == 8 and seen["full_path"] == "/score?a=1&a=2&b=x"
    r = rt.client.post("/score", data={"k": "v"}, files={"image": ("cat.png", b"\x89PNG1234", "image/png")})
    seen = r.json()
    assert seen["form"] == {"k": ["v"]} and seen["files"] == {"image": ["cat.png", "image/png", 8]}
    r = rt.client.post("/score", data={"k": "v", "n": "2"})
    assert r.json()["form"] == {"k": ["v"], "n": ["2"]}


def test_an_undecorated_run_gets_a_malformed_body_as_sent(runtime):
    """As Azure: run() gets the text, so a script answering its own message about bad JSON can."""
    rt = runtime("json_catch_score.py")
    r = rt.client.post("/score", content=b'{"a": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["raw"] == '{"a": ' and r.json()["error"].startswith("bad input:")
    assert rt.client.post("/score", content=b"").json()["raw"] == ""
    assert rt.client.post("/score", json={"a": 1}).json() == {"got": {"a": 1}}


def test_a_script_failing_on_the_malformed_body_it_was_handed_is_a_400(runtime):
    rt = runtime("slow_score.py")
    r = rt.client.post("/score", content=b'{"sleep": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["message"].startswith("POST body could not be decoded as JSON")
    assert r.headers["x-ms-run-function-failed"] == "False"


def test_get_json_on_a_body_that_is_not_json_is_a_400(runtime, tmp_path):
    script = tmp_path / "score.py"
    script.write_text(
        "from pipeline_plugin.runtime import rawhttp\n\ndef init():\n    pass\n\n"
        "@rawhttp\ndef run(request):\n    return {'n': len(request.get_json())}\n")
    rt = runtime("", {"AZUREML_ENTRY_SCRIPT": str(script)})
    assert rt.client.post("/score", json=[1, 2]).json() == {"n": 2}
    r = rt.client.post("/score", content=b"[1, ", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["message"]
    assert rt.client.post("/score", content=b"[1]", headers={"Content-Type": "text/plain"}).status_code == 415


def test_flask_response_returned_by_run_is_sent_as_is(runtime, tmp_path):
    script = tmp_path / "score.py"
    script.write_text(
        "from werkzeug.wrappers import Response\n\ndef init():\n    pass\n\n"
        "def run(raw):\n    r = Response('{\"ok\": 1}', status=202, mimetype='application/json')\n"
        "    r.headers['X-Extra'] = 'yes'\n    return r\n")
    rt = runtime("", {"AZUREML_ENTRY_SCRIPT": str(script)})
    r = rt.client.post("/score", json={})
    assert (r.status_code, r.json(), r.headers["x-extra"]) == (202, {"ok": 1}, "yes")
    assert r.headers["content-type"] == "application/json"


def test_plain_scripts_do_not_load_werkzeug(runtime, tmp_path):
    """The werkzeug wrappers serve @rawhttp scripts only: the plain-JSON path stays as lean as it was."""
    script = tmp_path / "score.py"
    script.write_text("import sys\n\ndef init():\n    pass\n\n"
                      "def run(raw):\n    return sorted(m for m in sys.modules if m.split('.')[0] == 'werkzeug')\n")
    rt = runtime("", {"AZUREML_ENTRY_SCRIPT": str(script)})
    assert rt.client.post("/score", json={}).json() == []
