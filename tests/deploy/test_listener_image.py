"""`pipeline-plugin listener-image` as users run it: the image builds FROM the local base (offline),
runs `pipeline-plugin serve` as a non-root user, serves HTTPS with a mounted certificate, stores a
signed delivery (MLflow's HMAC) and answers 200, and stops on SIGTERM with exit 0."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from conftest import unused_port
from pipeline_plugin.builders import listener_image
from pipeline_plugin.sources.auth import sign
from tls_certs import make_cert

SECRET = "image-test-secret"


@pytest.fixture(scope="module")
def image(docker_client, base_image):
    tag = f"pp-test-listener-{uuid.uuid4().hex[:8]}:1"
    out = subprocess.run(
        [sys.executable, "-m", "pipeline_plugin.cli", "listener-image", "--tag", tag, "--extras", "postgres",
         "--base-image", base_image, "--json"],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["image"] == tag and result["image_id"].startswith("sha256:")
    assert "Step " in out.stderr  # build progress was shown
    yield tag
    try:
        docker_client.images.remove(tag, force=True)
    except Exception:  # noqa: BLE001
        pass


def test_the_image_serves_https_as_non_root_and_stores_a_signed_delivery(docker_client, image, tmp_path):
    tls = tmp_path / "tls"
    cert, key = make_cert(tls, "listener-image", hosts=("localhost", "127.0.0.1"))
    tls.chmod(0o755)
    for f in (cert, key):
        f.chmod(0o644)  # the test's files: readable by the image's user (uid 10001)
    port = unused_port()
    container = docker_client.containers.run(
        image, ["--tls-cert", "/etc/pipeline-plugin/tls/cert.pem", "--tls-key", "/etc/pipeline-plugin/tls/key.pem"],
        detach=True, name=f"pp-test-listener-{uuid.uuid4().hex[:8]}",
        environment={"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET, "PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS": "2000"},
        volumes={str(tls): {"bind": "/etc/pipeline-plugin/tls", "mode": "ro"}},
        ports={f"{listener_image.PORT}/tcp": ("127.0.0.1", port)},
    )
    url = f"https://127.0.0.1:{port}"
    verify = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/healthz", verify=verify, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            container.reload()
            assert container.status != "exited", container.logs().decode(errors="replace")
            assert time.monotonic() < deadline, container.logs().decode(errors="replace")
            time.sleep(0.5)

        body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "2026-11-25T03:26:08+00:00",
                           "data": {"name": "churn-model", "version": "4", "source": "models:/m-4", "tags": {}}}).encode()
        did, ts = "image-1", str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": did, "X-MLflow-Timestamp": ts,
                   "X-MLflow-Signature": sign(SECRET.encode(), did, ts, body)}
        r = httpx.post(url + "/webhooks/mlflow", content=body, headers=headers, verify=verify, timeout=10)
        assert r.status_code == 200, r.text
        (event_id,) = r.json()["stored"]
        # a wrong signature is refused
        bad = dict(headers, **{"X-MLflow-Signature": sign(b"other", did, ts, body)})
        assert httpx.post(url + "/webhooks/mlflow", content=body, headers=bad, verify=verify, timeout=10).status_code == 401

        # stored in the container's inbox, as `pipeline-plugin events list` there shows it
        code, out = container.exec_run(["pipeline-plugin", "events", "list", "--json"])
        assert code == 0, out
        events = json.loads(out)
        assert [e["id"] for e in (events if isinstance(events, list) else events["events"])] == [event_id]

        # the server process itself (PID 1) runs as the image's non-root user
        code, out = container.exec_run(["cat", "/proc/1/status"])
        uid_line = next(line for line in out.decode().splitlines() if line.startswith("Uid:"))
        assert set(uid_line.split()[1:]) == {str(listener_image.UID)}
        code, out = container.exec_run(["cat", "/proc/1/cmdline"])
        assert out.split(b"\0")[1:3] == [b"/opt/venv/bin/pipeline-plugin", b"serve"]

        container.stop(timeout=30)  # SIGTERM
        assert container.wait(timeout=30)["StatusCode"] == 0, container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


def test_generate_dockerfile_writes_an_offline_non_root_context_and_mistakes_exit_2(tmp_path):
    import tomllib

    def run(*args):
        return subprocess.run([sys.executable, "-m", "pipeline_plugin.cli", "listener-image", "--tag", "x/listener:1", *args],
                              capture_output=True, text=True, timeout=600)

    out = run("--extras", "postgress", "--generate-dockerfile", str(tmp_path / "a"))
    assert out.returncode == 2 and "--extras 'postgress'" in out.stderr and "postgres" in out.stderr
    ctx = tmp_path / "ctx"
    out = run("--extras", "postgres", "--generate-dockerfile", str(ctx))
    assert out.returncode == 0, out.stderr
    dockerfile = (ctx / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile and 'ENTRYPOINT ["pipeline-plugin", "serve", "--host", "0.0.0.0"' in dockerfile
    assert "--no-index" in dockerfile and "pip install" in dockerfile
    wheels = {p.name.split("-")[0].lower() for p in (ctx / "wheels").glob("*.whl")}
    assert {"starlette", "uvicorn", "sqlalchemy", "psycopg", "psycopg_binary", "hatchling"} <= wheels
    project = tomllib.loads((ctx / "src" / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"pipeline-plugin": "pipeline_plugin.cli:main"}
    assert list(project["optional-dependencies"]) == ["postgres"]
    assert (ctx / "src" / "pipeline_plugin" / "_data" / "templates").is_dir()
    out = run("--generate-dockerfile", str(ctx))
    assert out.returncode == 2 and "not empty" in out.stderr
