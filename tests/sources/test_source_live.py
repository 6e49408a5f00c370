"""The sources against the real senders on this machine: a real MLflow 3.17.2 server delivering its
webhooks, and Debian's docker-registry notifying on a real ``docker push``/``pull``. Deliveries are
captured by a bare HTTP server (no listener logic), then verified and parsed by the sources, so a
change in what the real senders emit fails here. The services are required: missing -> failure."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
import time
import uuid

import pytest

from pipeline_plugin.sources import Headers, Request, get_source, receive
from services import docker_registry, mlflow_server  # tests/services.py: real services on loopback


class _Capture(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server API
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        self.server.received.append(  # type: ignore[attr-defined]
            Request("POST", self.path.split("?")[0], Headers(dict(self.headers.items())), body, now=time.time())
        )
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def capture():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for deliveries")


# ---- docker-registry --------------------------------------------------------------------------
def _tiny_image(docker_client, tag: str):
    """A one-file image FROM scratch, built locally (no network)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM scratch\nCOPY model.txt /model.txt\n"),
                           ("model.txt", uuid.uuid4().hex.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    image, _ = docker_client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True)
    return image


@pytest.mark.docker
@pytest.mark.registry
def test_real_docker_push_is_one_image_pushed_and_pull_is_nothing(tmp_path, capture, docker_client):
    token = "registry-token-" + uuid.uuid4().hex[:8]
    source = get_source("docker-registry")
    url = f"http://127.0.0.1:{capture.server_address[1]}/webhooks/docker-registry"
    with docker_registry(tmp_path, notify_url=url, notify_token=token) as registry:
        repo = f"{registry.host}/pp-sources-{uuid.uuid4().hex[:8]}/model-server"
        _tiny_image(docker_client, f"{repo}:v1")
        try:
            docker_client.images.push(repo, tag="v1")
            digest = docker_client.images.get_registry_data(f"{repo}:v1").id

            def pushed():
                events = [e for r in capture.received for e in receive(source, r, token)]
                return events if any(e.version == "v1" for e in events) else None

            events = wait_for(pushed)
            assert [(e.kind, e.version, e.digest) for e in events] == [("image.pushed", "v1", digest)]
            [event] = events
            assert event.image_uri == f"{repo}:v1"
            assert event.model == repo.split("/", 1)[1]
            assert event.registry["host"] == registry.host

            before = len(capture.received)
            docker_client.images.remove(f"{repo}:v1", force=True)
            docker_client.images.pull(repo, tag="v1")
            wait_for(lambda: len(capture.received) > before)
            time.sleep(1)  # let any further notification of the pull arrive
            pulls = capture.received[before:]
            assert any(b'"pull"' in r.body for r in pulls)
            assert [e for r in pulls for e in receive(source, r, token)] == []
        finally:
            try:
                docker_client.images.remove(f"{repo}:v1", force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass


# ---- MLflow -----------------------------------------------------------------------------------
@pytest.mark.mlflow
def test_real_mlflow_server_deliveries_verify_and_normalise(tmp_path, capture, monkeypatch):
    from mlflow import MlflowClient

    secret = "live-" + uuid.uuid4().hex
    source = get_source("mlflow")
    url = f"http://127.0.0.1:{capture.server_address[1]}/webhooks/mlflow"
    with mlflow_server(tmp_path) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
        hook = client.create_webhook(
            name="pipeline-plugin",
            url=url,
            events=["model_version.created", "model_version_tag.set", "model_version_alias.created",
                    "model_version_alias.deleted", "registered_model.created"],
            secret=secret,
        )
        client.create_registered_model("churn-live")
        client.create_model_version("churn-live", source="s3://bucket/churn/1", tags={"stage_hint": "candidate"})
        client.set_model_version_tag("churn-live", "1", "validation_status", "passed")
        client.set_registered_model_alias("churn-live", "champion", "1")
        client.delete_registered_model_alias("churn-live", "champion")
        result = client.test_webhook(hook.webhook_id)
        assert result.success, result

        def parsed():
            if len(capture.received) < 6:
                return None
            return [(r, receive(source, r, secret)) for r in capture.received]

        deliveries = wait_for(parsed, timeout=60)
    events = [e for _, evs in deliveries for e in evs]
    summary = sorted((e.kind, e.model, e.version, e.alias or "", e.is_test) for e in events)
    assert summary == sorted([
        ("model_version.created", "churn-live", "1", "", False),
        ("tag.set", "churn-live", "1", "", False),
        ("alias.set", "churn-live", "1", "champion", False),
        ("alias.deleted", "churn-live", "*", "champion", False),
        ("model_version.created", "example_model", "1", "", True),  # test_webhook uses the first event
    ])
    created = next(e for e in events if e.kind == "model_version.created" and not e.is_test)
    assert dict(created.tags) == {"stage_hint": "candidate"} and created.artifact_uri == "s3://bucket/churn/1"
    assert len({e.delivery_id for e in events}) == len(events)
    # the registered_model.created delivery verifies but announces no version
    assert sum(1 for _, evs in deliveries if evs == []) == 1
