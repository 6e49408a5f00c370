"""`pipeline-plugin serve` run as a service: HTTPS with --tls-cert/--tls-key (the certificate is
reloaded when its files change, without a restart), and a bounded SIGTERM shutdown that a client
holding an unfinished body cannot stall, losing none of the deliveries already acknowledged."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time

import httpx

from pipeline_plugin.inbox import Inbox
from pipeline_plugin.sources.auth import sign
from services import serve_process
from tls_certs import make_cert, served_common_name

SECRET = "service-test-secret"
ENV = {"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET}


def delivery(i: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({
        "entity": "model_version", "action": "created", "timestamp": "2026-11-25T03:26:08+00:00",
        "data": {"name": "churn-model", "version": str(i), "source": f"models:/m-{i}", "tags": {}},
    }).encode()
    did, ts = f"svc-{i}", str(int(time.time()))
    return body, {"Content-Type": "application/json", "X-MLflow-Delivery-Id": did, "X-MLflow-Timestamp": ts,
                  "X-MLflow-Signature": sign(SECRET.encode(), did, ts, body)}


def test_sigterm_with_a_client_holding_half_a_body_exits_within_the_bound_and_keeps_acknowledged(tmp_path):
    state = tmp_path / "state"
    env = dict(ENV, PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS="2000")
    with serve_process(state, env=env) as serve:
        acked = []
        with httpx.Client(base_url=serve.url, timeout=10) as c:
            for i in range(1, 4):
                body, headers = delivery(i)
                r = c.post("/webhooks/mlflow", content=body, headers=headers)
                assert r.status_code == 200, r.text
                acked += r.json()["stored"]
        # an unauthenticated client: headers announce 1000 bytes, it sends 10 and holds the connection
        held = socket.create_connection(("127.0.0.1", serve.port))
        held.sendall(b"POST /webhooks/mlflow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"entity\":")
        time.sleep(0.5)
        started = time.monotonic()
        serve.process.terminate()
        try:
            code = serve.process.wait(timeout=30)
        finally:
            held.close()
        took = time.monotonic() - started
    # bounded: 2 s for open requests, then the rest is closed (the margin is for a loaded machine)
    assert code == 0, serve.log()
    assert took < 15, f"SIGTERM took {took:.1f}s"
    assert "timeout graceful shutdown exceeded" in serve.log()
    stored = {e.id for e in Inbox(state).list()}
    assert set(acked) <= stored and len(acked) == 3


def wait_https(proc: subprocess.Popen, url: str, ca: str, log) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log()
        try:
            if httpx.get(url + "/healthz", verify=ssl.create_default_context(cafile=ca), timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("serve --tls-cert did not answer over HTTPS:\n" + log())


def test_https_serves_signed_deliveries_and_reloads_the_certificate_without_restart(tmp_path, free_port):
    cert, key = make_cert(tmp_path / "tls", "listener-one")
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "pipeline_plugin.cli", "serve", "--host", "127.0.0.1", "--port", str(free_port),
            "--state-dir", str(state), "--tls-cert", str(cert), "--tls-key", str(key)]
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **ENV}, stdout=out, stderr=subprocess.STDOUT)
    log = log_path.read_text
    url = f"https://127.0.0.1:{free_port}"
    try:
        wait_https(proc, url, str(cert), log)
        body, headers = delivery(1)
        r = httpx.post(url + "/webhooks/mlflow", content=body, headers=headers, verify=ssl.create_default_context(cafile=str(cert)), timeout=10)
        assert r.status_code == 200, r.text
        assert served_common_name("127.0.0.1", free_port) == "listener-one"
        # plain HTTP on the HTTPS port is not served
        try:
            plain = httpx.get(f"http://127.0.0.1:{free_port}/healthz", timeout=5)
            assert plain.status_code != 200
        except httpx.HTTPError:
            pass

        # the certificate is renewed in place (as cert-manager or certbot do): new handshakes get it
        new_cert, new_key = make_cert(tmp_path / "tls-new", "listener-two")
        key.write_bytes(new_key.read_bytes())
        cert.write_bytes(new_cert.read_bytes())
        deadline = time.monotonic() + 30
        while served_common_name("127.0.0.1", free_port) != "listener-two":
            assert time.monotonic() < deadline, "the new certificate was not served:\n" + log()
            time.sleep(0.3)
        r = httpx.post(url + "/webhooks/mlflow", content=body, headers=headers, verify=ssl.create_default_context(cafile=str(cert)), timeout=10)
        assert r.json()["duplicate"] is True
        assert proc.poll() is None  # no restart
        assert "TLS certificate reloaded" in log()
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log()
    assert [e.id for e in Inbox(state).list()] == r.json()["stored"]


def run_serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline_plugin.cli", "serve", "--port", "1", *args],
                          capture_output=True, text=True, timeout=60)


def test_tls_and_shutdown_mistakes_exit_2_naming_the_flag(tmp_path):
    cert, key = make_cert(tmp_path / "tls", "x")
    out = run_serve("--state-dir", str(tmp_path / "s"), "--tls-cert", str(cert))
    assert out.returncode == 2 and "--tls-cert and --tls-key go together" in out.stderr
    out = run_serve("--state-dir", str(tmp_path / "s"), "--tls-cert", str(cert), "--tls-key", str(tmp_path / "no.pem"))
    assert out.returncode == 2 and "--tls-key" in out.stderr and "no such file" in out.stderr
    other_cert, _ = make_cert(tmp_path / "other", "y")
    out = run_serve("--state-dir", str(tmp_path / "s"), "--tls-cert", str(other_cert), "--tls-key", str(key))
    assert out.returncode == 2 and "do not load" in out.stderr
    out = subprocess.run([sys.executable, "-m", "pipeline_plugin.cli", "serve", "--port", "1", "--state-dir",
                          str(tmp_path / "s")], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS": "soon"})
    assert out.returncode == 2 and "PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS='soon'" in out.stderr
