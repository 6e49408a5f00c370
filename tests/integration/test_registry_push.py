"""A real `docker push` into Debian's docker-registry, whose notifications (with a bearer token)
point at a running `pipeline-plugin serve`, arrives as one `image.pushed` event; a pull adds none."""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import time

import httpx
import pytest

from pipeline_plugin.inbox import Inbox
from services import docker_registry, serve_process

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.slow]

TOKEN = "registry-notify-token"
RULES = """
name: model-server-image-pushed
match:
  source: docker-registry
  kind: image.pushed
  model: "*/churn-model-server"
  version: "v*"
"""


def tiny_image(docker_client, tag: str) -> None:
    """An image FROM scratch holding one small file: nothing to pull from anywhere."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (
            ("Dockerfile", b"FROM scratch\nCOPY model.txt /model.txt\n"),
            ("model.txt", f"churn model {secrets.token_hex(8)}\n".encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    docker_client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True)


def push(docker_client, repository: str, tag: str) -> None:
    for line in docker_client.images.push(repository, tag=tag, stream=True, decode=True):
        assert "error" not in line, line


def test_docker_push_arrives_as_image_pushed(tmp_path, docker_client):
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "image.yml").write_text(RULES)
    state = tmp_path / "state"
    namespace = f"pp-test-{secrets.token_hex(4)}"
    images: list[str] = []
    with serve_process(state, triggers, env={"PIPELINE_PLUGIN_DOCKER_REGISTRY_SECRET": TOKEN}) as serve:
        with docker_registry(tmp_path, notify_url=f"{serve.url}/webhooks/docker-registry", notify_token=TOKEN) as registry:
            repository = f"{registry.host}/{namespace}/churn-model-server"
            try:
                tiny_image(docker_client, f"{repository}:v1")
                images.append(f"{repository}:v1")
                push(docker_client, repository, "v1")
                docker_client.images.get(f"{repository}:v1").tag(repository, "latest")
                images.append(f"{repository}:latest")
                push(docker_client, repository, "latest")
                docker_client.images.pull(repository, tag="v1")

                inbox = Inbox(state)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    events = inbox.list()
                    if len(events) >= 2 and all(e.status != "pending" for e in events):
                        break
                    time.sleep(0.25)
                time.sleep(1.5)  # let any (wrong) event from the pull arrive too
                events = inbox.list()
                metrics = httpx.get(f"{serve.url}/metrics").text
            finally:
                for image in images:
                    try:
                        docker_client.images.remove(image, force=True)
                    except Exception:  # noqa: BLE001 - cleanup only
                        pass

    assert [(e.event.kind, e.event.version) for e in events] == [("image.pushed", "v1"), ("image.pushed", "latest")]
    v1, latest = events
    assert v1.event.model == f"{namespace}/churn-model-server"
    assert v1.event.digest and v1.event.digest.startswith("sha256:")
    assert v1.event.image_uri and v1.event.image_uri.endswith(f"{namespace}/churn-model-server:v1")
    assert v1.status == "matched" and v1.rules == ["model-server-image-pushed"]
    assert latest.status == "unmatched"
    # the registry's layer pushes and the pull were delivered and accepted, but are no new version
    assert 'pipeline_plugin_deliveries_total{outcome="no_event",source="docker-registry"}' in metrics
    assert 'outcome="unauthorized"' not in metrics
    assert json.loads(json.dumps(v1.to_dict()))["digest"] == v1.event.digest
