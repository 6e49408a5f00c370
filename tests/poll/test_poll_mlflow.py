"""Polling a real MLflow server started without webhooks: `pipeline-plugin poll --source mlflow --once`
stores the registered versions and aliases, catches up on versions registered while nobody polled, and
a version announced by a signed webhook and by the poller is one event; `serve` with a `poll:` config
polls by itself, under the inbox lease, and shows the poller in /metrics and `events pollers`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import yaml
from starlette.testclient import TestClient

from pipeline_plugin.inbox import Inbox
from pipeline_plugin.server import Listener, create_app, load_config
from pipeline_plugin.sources.auth import sign
from tests.services import mlflow_server, serve_process

pytestmark = pytest.mark.mlflow
SECRET = "poll-test-secret"


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-poll")) as server:
        yield server.url


def register(url: str, name: str, count: int) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - not registered yet
        client.create_registered_model(name)
    return [client.create_model_version(name, source=f"s3://models/{name}/{uuid.uuid4().hex[:6]}").version
            for _ in range(count)]


def poll_cli(state: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline_plugin.cli", "poll", "--once", "--json",
                           "--state-dir", str(state), *args],
                          capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **(env or {})})


def poll_main(capsys, state: Path, *args: str) -> tuple[int, dict, str]:
    """The same command in this process (MLflow's client is imported once, not per run)."""
    from pipeline_plugin.cli import main

    capsys.readouterr()
    code = main(["poll", "--once", "--json", "--state-dir", str(state), *args])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def stored(state: Path, model: str) -> list:
    return [e for e in Inbox(state).list() if e.event.model == model]


def test_poll_once_stores_versions_and_catches_up(mlflow, tmp_path, capsys):
    name = f"churn-{uuid.uuid4().hex[:6]}"
    register(mlflow, name, 2)
    from mlflow.tracking import MlflowClient

    MlflowClient(mlflow).set_registered_model_alias(name, "champion", "1")
    state = tmp_path / "state"
    done = poll_cli(state, "--source", "mlflow", "--option", f"models=[{name}]", env={"MLFLOW_TRACKING_URI": mlflow})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["ok"] is True
    # the first poll of this server is a baseline: stored, but ignored (no pipeline starts for them)
    assert summary["sources"]["mlflow"] | {"error": None} == {"seen": 3, "new": 0, "duplicate": 0, "skipped": 0,
                                                               "baseline": 3, "errors": 0, "error": None}
    assert "3 recorded as baseline" in done.stderr
    events = stored(state, name)
    assert sorted((e.event.kind, e.event.version, e.event.alias) for e in events) == [
        ("alias.set", "1", "champion"), ("model_version.created", "1", None), ("model_version.created", "2", None)]
    created = [e.event for e in events if e.event.kind == "model_version.created"]
    assert all(e.registry == {"tracking_uri": mlflow} and e.artifact_uri.startswith(f"s3://models/{name}/")
               for e in created)

    # nobody polls while two versions are registered and the alias moves: the next poll catches up
    between = time.time()
    time.sleep(0.05)
    register(mlflow, name, 2)
    MlflowClient(mlflow).set_registered_model_alias(name, "champion", "4")
    code, again, err = poll_main(capsys, state, "--source", "mlflow", "--option", f"models=[{name}]",
                                 "--option", f"tracking_uri={mlflow}")
    assert code == 0, err
    counts = again["sources"]["mlflow"]
    assert (counts["seen"], counts["new"], counts["duplicate"], counts["baseline"]) == (5, 3, 2, 0)
    assert sorted(e.status for e in stored(state, name)) == ["ignored"] * 3 + ["pending"] * 3
    versions = sorted(e.event.version for e in stored(state, name) if e.event.kind == "model_version.created")
    assert versions == ["1", "2", "3", "4"]
    aliases = [(e.event.version) for e in stored(state, name) if e.event.kind == "alias.set"]
    assert aliases == ["1", "4"]
    assert "new model_version.created" in err  # progress lines on stderr, JSON alone on stdout

    # polling turned on for this registry only now: `since` keeps versions registered before it out
    code, fresh, err = poll_main(capsys, tmp_path / "fresh", "--source", "mlflow", "--option", f"models=[{name}]",
                                 "--option", f"tracking_uri={mlflow}", "--option", f"since={between}")
    assert code == 2 and "since: must be an ISO 8601 time" in err
    since = datetime.fromtimestamp(between, timezone.utc).isoformat()
    code, fresh, err = poll_main(capsys, tmp_path / "fresh", "--source", "mlflow", "--option", f"models=[{name}]",
                                 "--option", f"tracking_uri={mlflow}", "--option", f"since='{since}'")
    assert code == 0, err
    assert (fresh["sources"]["mlflow"]["new"], fresh["sources"]["mlflow"]["skipped"]) == (3, 2)
    assert sorted((e.event.kind, e.event.version) for e in stored(tmp_path / "fresh", name)) == [
        ("alias.set", "4"), ("model_version.created", "3"), ("model_version.created", "4")]


def mlflow_delivery(name: str, version: str, delivery: str) -> tuple[bytes, dict]:
    body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "2026-12-06T00:00:00+00:00",
                       "data": {"name": name, "version": version, "source": f"models:/{name}/{version}",
                                "run_id": None, "tags": {}, "description": None}}).encode()
    ts = str(int(time.time()))
    return body, {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": ts,
                  "X-MLflow-Signature": sign(SECRET.encode(), delivery, ts, body)}


def test_webhook_and_poll_of_one_version_is_one_event(mlflow, tmp_path, capsys):
    name = f"both-{uuid.uuid4().hex[:6]}"
    register(mlflow, name, 2)
    config_file = tmp_path / "listener.yml"
    config_file.write_text(yaml.safe_dump({"sources": {"mlflow": {"tracking_uri": mlflow}},
                                           "poll": {"mlflow": {"models": [name], "aliases": False}}}))
    listener = Listener(tmp_path / "state", environ={"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET},
                        config=load_config(config_file), start_worker=False)
    client = TestClient(create_app(listener))  # not entered: no lifespan, so serve's pollers stay off here
    body, headers = mlflow_delivery(name, "1", "d-1")
    assert client.post("/webhooks/mlflow", content=body, headers=headers).json()["duplicate"] is False

    # the poller takes tracking_uri from sources.mlflow: version 1 is the webhook's event, version 2 existed
    # before this first poll: recorded as baseline (ignored)
    code, done, err = poll_main(capsys, tmp_path / "state", "--config", str(config_file))
    assert code == 0, err
    counts = done["sources"]["mlflow"]
    assert (counts["seen"], counts["new"], counts["baseline"], counts["duplicate"]) == (2, 0, 1, 1)

    # and the webhook for version 2, arriving after the poll, is a duplicate of the polled event: still ignored
    body, headers = mlflow_delivery(name, "2", "d-2")
    answer = client.post("/webhooks/mlflow", content=body, headers=headers).json()
    assert answer["duplicate"] is True
    events = stored(tmp_path / "state", name)
    assert sorted(e.event.version for e in events) == ["1", "2"]
    polled = next(e for e in events if e.event.version == "2")
    assert polled.event.delivery_id.startswith("poll:mlflow:") and answer["stored"] == [polled.id]
    assert polled.status == "ignored" and "existed before polling started" in polled.reason


def test_serve_polls_its_config(mlflow, tmp_path, capsys):
    name = f"served-{uuid.uuid4().hex[:6]}"
    register(mlflow, name, 1)
    config_file = tmp_path / "listener.yml"
    # models: all (the default): search_registered_models, paged, with each model's aliases
    config_file.write_text(yaml.safe_dump({"poll": {"mlflow": {"tracking_uri": mlflow, "interval": 1}}}))
    state = tmp_path / "state"
    with serve_process(state, extra_args=["--config", str(config_file), "--no-worker"]) as serve:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(stored(state, name)) < 1:
            time.sleep(0.3)
        assert [e.event.version for e in stored(state, name)] == ["1"]
        register(mlflow, name, 1)  # registered while serve runs: the next poll stores it, and the alias
        from mlflow.tracking import MlflowClient

        MlflowClient(mlflow).set_registered_model_alias(name, "live", "2")
        while time.monotonic() < deadline and len(stored(state, name)) < 3:
            time.sleep(0.3)
        assert sorted((e.event.kind, e.event.version) for e in stored(state, name)) == [
            ("alias.set", "2"), ("model_version.created", "1"), ("model_version.created", "2")]
        metrics = httpx.get(f"{serve.url}/metrics").text
        assert 'pipeline_plugin_poller_up{source="mlflow"} 1.0' in metrics
        from pipeline_plugin.cli import main

        capsys.readouterr()
        assert main(["events", "pollers", "--json", "--state-dir", str(state)]) == 0
        [status] = json.loads(capsys.readouterr().out)
        assert status["source"] == "mlflow" and status["state"] == "ok" and status["last_success"]
        assert status["new"] >= 2 and status["registry"].endswith(mlflow.split("//")[1])


def test_an_mlflow_server_that_does_not_answer_fails_the_poll_at_once(tmp_path, capsys):
    from tests.services import _free_port

    url = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    code, summary, err = poll_main(capsys, tmp_path / "state", "--source", "mlflow", "--option", f"tracking_uri={url}")
    assert code == 3 and summary["ok"] is False
    assert summary["sources"]["mlflow"]["error"] == f"MLflow at {url}: no answer (ConnectionError)"
    assert time.monotonic() - started < 60  # not MLflow's minutes of connection retries
