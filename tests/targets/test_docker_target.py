"""The docker target against the real Docker Engine and a real nginx stable address."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from pipeline_plugin.errors import ConfigError, NotFoundError, StageFailed
from pipeline_plugin.targets import DeploymentSpec, get_target
from pipeline_plugin.targets.docker import LABEL, DockerTarget
from pipeline_plugin.targets.nginx_proxy import StableAddress, port_is_free
from tests.conftest import unused_port

from loadgen import LoadLoop


def request(port: int, method: str, path: str, body: dict | None = None, key: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


@pytest.fixture
def target(state_dir, docker_client):
    t = DockerTarget(state_dir=state_dir, ready_timeout=60)
    created: list[tuple[str, str]] = []
    t.created = created  # type: ignore[attr-defined]
    yield t
    for service, env in created:
        t.delete(service, env)


def spec(service, image, port=None, **kw):
    return DeploymentSpec(service=service, env="staging", image=image, port=port, **kw)


def test_deploy_serves_at_the_stable_address_with_limits_env_keys_and_labels(target, app_images, service, docker_client, state_dir):
    port = unused_port()
    target.created.append((service, "staging"))
    d = target.create(
        spec(service, app_images["1"], port, cpu_cores=0.5, memory_gb=0.25, environment={"APP_GREETING": "hi"}, keys=("s3cret",),
             labels={"run-id": "r-1"})
    )
    assert d.scoring_uri == f"http://127.0.0.1:{port}/score"
    assert d.swagger_uri == f"http://127.0.0.1:{port}/swagger.json"
    assert (d.model, d.version, d.status) == ("test-model", "1", "running")
    assert d.image_id == docker_client.images.get(app_images["1"]).id

    assert request(port, "POST", "/score", {"data": [1]})[0] == 401  # keys enforced
    assert request(port, "POST", "/score", {"data": [1]}, key="s3cret") == (200, {"version": "1", "result": [1]})
    big = "x" * 2_000_000  # bodies larger than nginx's buffers pass both ways (no temp files needed)
    assert request(port, "POST", "/score", {"data": big}, key="s3cret") == (200, {"version": "1", "result": big})
    status, env = request(port, "GET", "/env")
    assert env["APP_GREETING"] == "hi" and env["uid"] != 0

    container = docker_client.containers.get(d.details["container_id"])
    host = container.attrs["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 256 * 1024**2
    assert host["RestartPolicy"]["Name"] == "unless-stopped"  # kept running once ready
    bindings = host["PortBindings"]["5001/tcp"]
    assert bindings[0]["HostIp"] == "127.0.0.1" and int(bindings[0]["HostPort"]) != port
    labels = container.labels
    assert labels[LABEL + "service"] == service and labels[LABEL + "env"] == "staging"
    assert labels[LABEL + "image-id"] == d.image_id
    assert labels[LABEL + "model"] == "test-model" and labels[LABEL + "version"] == "1"
    assert labels[LABEL + "created"] and labels["run-id"] == "r-1"
    assert "s3cret" not in json.dumps(d.to_dict())  # keys are never part of what we print

    # a new target object (a new process) sees the same deployment
    fresh = DockerTarget(state_dir=state_dir)
    assert fresh.get(service, "staging") == d
    assert [x.service for x in fresh.list(service)] == [service]
    assert fresh.get(service, "production") is None


def test_create_and_delete_are_idempotent(target, app_images, service, docker_client, state_dir):
    target.created.append((service, "staging"))
    first = target.create(spec(service, app_images["1"]))
    again = target.create(spec(service, app_images["1"]))
    assert again.details["container_id"] == first.details["container_id"]
    port = first.details["port"]
    # the address's nginx gone (a reboot): get says so, create brings it back for the same container
    StableAddress(state_dir / "targets" / "docker" / service / "staging", "test").stop()
    assert target.get(service, "staging").status == "failed"
    revived = target.create(spec(service, app_images["1"]))
    assert revived.status == "running" and revived.details["container_id"] == first.details["container_id"]
    assert request(port, "GET", "/")[0] == 200
    target.delete(service, "staging")
    target.delete(service, "staging")
    assert target.get(service, "staging") is None
    assert target.list(service) == []
    assert docker_client.containers.list(all=True, filters={"label": f"{LABEL}service={service}"}) == []
    # nginx let go of the stable address: another server can listen there (servers bind with
    # SO_REUSEADDR, past the closed connections' TIME_WAIT: nginx closes each one after its answer)
    assert port_is_free(port)
    assert [h["event"] for h in target.history(service, "staging")] == ["deleted"]


def test_update_switches_with_zero_failed_requests(target, app_images, service, docker_client):
    target.created.append((service, "staging"))
    old = target.create(spec(service, app_images["1"], keys=("k",)))
    port = old.details["port"]
    slow: list = []  # a request still running at the switch must finish on the old version
    slow_thread = threading.Thread(target=lambda: slow.append(request(port, "POST", "/score", {"data": 0, "sleep": 3}, key="k")))
    with LoadLoop(port, key="k", workers=3, sessions=2, max_requests=3000) as load:
        slow_thread.start()
        new = target.update(spec(service, app_images["2"], keys=("k",)))
    slow_thread.join(timeout=30)
    assert slow == [(200, {"version": "1", "result": 0})]
    assert load.failures == [], load.failures[:5]
    assert load.versions["1"] > 0 and load.versions["2"] > 0, load.versions
    assert new.version == "2" and new.details["port"] == port and new.scoring_uri == old.scoring_uri
    assert request(port, "POST", "/score", {"data": 1}, key="k")[1]["version"] == "2"
    names = [c.name for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL}service={service}"})]
    assert names == [new.details["container"]]  # the old container is stopped and removed
    history = target.history(service, "staging")
    assert history[-1]["event"] == "replaced" and history[-1]["deployment"]["version"] == "1"


def test_a_version_that_never_gets_ready_or_crashes_leaves_the_old_one_serving(app_images, service, docker_client, state_dir):
    target = DockerTarget(state_dir=state_dir, ready_timeout=4)
    try:
        old = target.create(spec(service, app_images["1"]))
        with pytest.raises(StageFailed, match="not ready within"):
            target.update(spec(service, app_images["2"], environment={"FAIL_READY": "1"}))
        started = time.monotonic()
        with pytest.raises(StageFailed, match="exited with code 3.*model file is corrupt"):
            DockerTarget(state_dir=state_dir, ready_timeout=60).update(spec(service, app_images["2"], environment={"CRASH": "1"}))
        assert time.monotonic() - started < 30  # a crash fails fast, not at the ready timeout
        assert target.get(service, "staging").version == "1"
        assert request(old.details["port"], "POST", "/score", {"data": 1})[1]["version"] == "1"
        containers = docker_client.containers.list(all=True, filters={"label": f"{LABEL}service={service}"})
        assert [c.id for c in containers] == [old.details["container_id"]]
    finally:
        target.delete(service, "staging")


def test_bad_input_is_named(target, app_images, service, tmp_path):
    with pytest.raises(NotFoundError, match="sha256:0000"):
        target.create(spec(service, "sha256:" + "0" * 64))
    with pytest.raises(ConfigError, match="--target process"):
        target.create(spec(service, str(Path(__file__).parent)))
    # a folder whose path Docker refuses as a reference (capitals) is still named as a folder
    (tmp_path / "Model").mkdir()
    with pytest.raises(ConfigError, match="--target process"):
        target.create(spec(service, str(tmp_path / "Model")))
    with pytest.raises(ConfigError, match="not an image reference Docker accepts"):
        target.create(spec(service, "Model:Latest"))
    with pytest.raises(ConfigError, match="service 'Bad_Name'"):
        target.create(spec("Bad_Name", app_images["1"]))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} .* already in use"):
            target.create(spec(service, app_images["1"], port))
    assert target.get(service, "staging") is None


def test_get_target_names_the_backends():
    assert get_target("docker").name == "docker"
    with pytest.raises(ConfigError, match="Did you mean 'docker'"):
        get_target("dokcer")


def test_replicas_run_behind_one_stable_address(target, app_images, service, docker_client):
    target.created.append((service, "staging"))
    first = target.create(spec(service, app_images["1"], replicas=2))
    port = first.details["port"]
    assert first.details["replicas"] == 2
    served_by = {request(port, "GET", "/env")[1]["hostname"] for _ in range(8)}
    assert len(served_by) == 2  # nginx balances over both containers
    with LoadLoop(port, workers=2, sessions=1, max_requests=1500) as load:
        second = target.update(spec(service, app_images["2"], replicas=2))
    assert load.failures == [], load.failures[:5]
    running = docker_client.containers.list(all=True, filters={"label": f"{LABEL}service={service}"})
    assert sorted(c.name for c in running) == sorted(second.details["containers"])
    assert {c.labels[LABEL + "version"] for c in running} == {"2"}


def test_two_state_dirs_on_one_engine_keep_their_own_containers(app_images, service, docker_client, tmp_path):
    """A demo and a test run (two state dirs) deploying the same service and env on one Docker
    Engine: replacing or deleting in one never stops the other's containers."""
    mine = DockerTarget(state_dir=tmp_path / "a", ready_timeout=60)
    theirs = DockerTarget(state_dir=tmp_path / "b", ready_timeout=60)
    try:
        a = mine.create(spec(service, app_images["1"]))
        b = theirs.create(spec(service, app_images["1"]))
        theirs.update(spec(service, app_images["2"]))
        theirs.delete(service, "staging")
        assert docker_client.containers.get(a.details["container_id"]).status == "running"
        assert request(a.details["port"], "POST", "/score", {"data": [1]})[0] == 200
        assert [d.service for d in mine.list(service)] == [service]
        assert b.details["container_id"] != a.details["container_id"]
    finally:
        mine.delete(service, "staging")
        theirs.delete(service, "staging")
