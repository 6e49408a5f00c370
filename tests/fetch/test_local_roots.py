"""Local paths: typed by the caller they are used in place; named by an event they are read only
below an allowed root (none by default), after resolving ``..`` and symlinks."""

from __future__ import annotations

import json
import os

import pytest
from starlette.testclient import TestClient

from pipeline_plugin.errors import ConfigError
from pipeline_plugin.fetch import backend_for, fetch
from pipeline_plugin.history import History
from pipeline_plugin.rules.load import load_rules
from pipeline_plugin.server import Listener, create_app, load_config
from pipeline_plugin.worker import Worker

TOKEN = "ce-token-for-fetch"


@pytest.fixture
def models(tmp_path):
    root = tmp_path / "models"
    (root / "churn").mkdir(parents=True)
    (root / "churn" / "model.pkl").write_bytes(b"weights")
    (root / "churn" / "requirements.txt").write_text("scikit-learn\n")
    (tmp_path / "secret.txt").write_text("do not read")
    return root


def test_the_callers_own_path_is_used_in_place(models, tmp_path):
    got = fetch(str(models / "churn"), tmp_path / "dest")
    assert got.path == models / "churn" and got.backend == "local"
    assert got.requirements == models / "churn" / "requirements.txt"
    assert not any((tmp_path / "dest").iterdir())
    assert fetch(f"file://{models}/churn/model.pkl", tmp_path / "d2").path == models / "churn" / "model.pkl"
    with pytest.raises(ConfigError, match="no such file or folder"):
        fetch(str(tmp_path / "nope"), tmp_path / "d3")


@pytest.mark.parametrize("uri", ["/etc/ssh", "file:///etc/ssh", "/etc/passwd"])
def test_event_paths_are_refused_without_roots(uri, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(ConfigError) as err:
        fetch(uri, dest, allowed_roots=[])
    assert uri in err.value.message and "allowed_roots" in err.value.message
    assert not any(dest.iterdir())


def test_event_paths_below_a_root_are_copied_and_escapes_refused(models, tmp_path):
    got = fetch(str(models / "churn"), tmp_path / "dest", allowed_roots=[models])
    assert got.path == tmp_path / "dest" / "churn" and (got.path / "model.pkl").read_bytes() == b"weights"
    assert got.requirements == got.path / "requirements.txt"
    # `..` and symlinks are resolved before the check
    for uri in (f"{models}/churn/../../secret.txt", f"file://{models}/../secret.txt"):
        with pytest.raises(ConfigError, match=r"not below an allowed root \(" + str(models)):
            fetch(uri, tmp_path / "d2", allowed_roots=[models])
    os.symlink(tmp_path / "secret.txt", models / "link.txt")
    with pytest.raises(ConfigError, match="not below an allowed root"):
        fetch(str(models / "link.txt"), tmp_path / "d3", allowed_roots=[models])
    os.symlink("/etc", models / "churn" / "etc")  # a link inside the folder that leads out of it
    with pytest.raises(ConfigError, match=r"links to /etc, outside the allowed roots"):
        fetch(str(models / "churn"), tmp_path / "d4", allowed_roots=[models])
    with pytest.raises(ConfigError, match="relative path"):
        fetch("churn", tmp_path / "d5", allowed_roots=[models])


def test_uri_forms_pick_their_backend():
    assert {u: backend_for(u).name for u in (
        "models:/churn/3", "models:/churn@champion", "runs:/abc/model", "mlflow-artifacts:/1/x",
        "arn:aws:sagemaker:eu-west-1:123456789012:model-package/churn/3", "s3://b/k.tar.gz",
        "azureml://subscriptions/s/resourceGroups/r/workspaces/w/models/churn/versions/3", "hf://acme/churn@v3",
        "/srv/m", "./m", "file:///srv/m", "model.pkl")} == {
        "models:/churn/3": "mlflow", "models:/churn@champion": "mlflow", "runs:/abc/model": "mlflow",
        "mlflow-artifacts:/1/x": "mlflow", "arn:aws:sagemaker:eu-west-1:123456789012:model-package/churn/3": "sagemaker",
        "s3://b/k.tar.gz": "sagemaker", "azureml://subscriptions/s/resourceGroups/r/workspaces/w/models/churn/versions/3":
        "azureml", "hf://acme/churn@v3": "huggingface", "/srv/m": "local", "./m": "local", "file:///srv/m": "local",
        "model.pkl": "local"}
    with pytest.raises(ConfigError, match=r"'http://x/m': no fetch backend.*models:/NAME/VERSION.*hf://REPO"):
        backend_for("http://x/m")


def _listener(tmp_path, config_text: str | None, rule_extra: str = ""):
    rules = tmp_path / "triggers"
    rules.mkdir()
    (tmp_path / "sample.json").write_text(json.dumps([[1.0, 2.0]]))
    (rules / "any.yml").write_text(
        "name: any-model\nmatch: {source: cloudevents, kind: model_version.created}\n"
        f"pipeline: {{provider: local, service: fetch-refusal, target: process, sample: ../sample.json{rule_extra}}}\n")
    config = None
    if config_text is not None:
        (tmp_path / "serve.yml").write_text(config_text)
        config = load_config(tmp_path / "serve.yml")
    listener = Listener(tmp_path / "state", rules=load_rules(rules), rules_dir=rules, config=config,
                        environ={"PIPELINE_PLUGIN_CLOUDEVENTS_SECRET": TOKEN}, start_worker=False)
    return listener, TestClient(create_app(listener), raise_server_exceptions=False)


def _deliver(client, artifact_uri: str, event_id: str = "evt-1"):
    event = {"specversion": "1.0", "id": event_id, "source": "https://sender.example/registry",
             "type": "model_version.created", "datacontenttype": "application/json",
             "data": {"model": "churn", "version": "1", "artifact_uri": artifact_uri}}
    r = client.post("/webhooks/cloudevents", json=event,
                    headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/cloudevents+json"})
    assert r.status_code in (200, 202), r.text


def test_a_cloudevent_naming_etc_ssh_is_refused_recorded_and_nothing_copied(tmp_path):
    listener, client = _listener(tmp_path, None)
    _deliver(client, "/etc/ssh")
    Worker(listener.inbox, listener.rules, listener.rules_dir, allowed_roots=listener.config.fetch_roots).drain()
    [stored] = listener.inbox.list()
    [run] = listener.inbox.runs(stored.id)
    records = History(tmp_path / "state").records(service="fetch-refusal")
    fetches = [r for r in records if r.action == "fetch"]
    assert [r.status for r in fetches] == ["failed"], records
    assert "refused to fetch model URI '/etc/ssh'" in fetches[0].reason and "allowed_roots" in fetches[0].reason
    assert not any(r.action == "package" for r in records)
    runs_dir = tmp_path / "state" / "runs"
    copied = [p for p in runs_dir.rglob("*") if p.is_file()] if runs_dir.exists() else []
    assert copied == []
    assert run.status == "failed" and "refused to fetch model URI '/etc/ssh'" in run.detail


def test_roots_from_the_listener_config_or_the_rule_allow_a_folder(tmp_path, models):
    with pytest.raises(ConfigError, match=r"fetch: unknown key 'allowed_root'.*allowed_roots"):
        (tmp_path / "bad.yml").write_text("fetch: {allowed_root: [/srv]}\n")
        load_config(tmp_path / "bad.yml")
    with pytest.raises(ConfigError, match=r"fetch.allowed_roots: '/no/such' is not a folder"):
        (tmp_path / "bad.yml").write_text("fetch: {allowed_roots: [/no/such]}\n")
        load_config(tmp_path / "bad.yml")
    (tmp_path / "ok.yml").write_text("fetch: {allowed_roots: [models]}\n")
    assert load_config(tmp_path / "ok.yml").fetch_roots == (str(models.resolve()),)
    rules = tmp_path / "r"
    rules.mkdir()
    (rules / "bad.yml").write_text("name: x\nmatch: {source: cloudevents}\npipeline: {provider: local, allowed_roots: [nope]}\n")
    with pytest.raises(ConfigError, match=r"pipeline.allowed_roots.*dir 'nope' does not exist"):
        load_rules(rules)
    (rules / "bad.yml").write_text("name: x\nmatch: {source: cloudevents}\npipeline: {provider: local, allowed_roots: [../models]}\n")
    [rule] = load_rules(rules)
    assert rule.pipeline["allowed_roots"] == ["../models"]


def test_a_tracking_uri_from_a_non_mlflow_sender_is_never_used(tmp_path, monkeypatch):
    """MLflow credentials go only to servers the listener names: a CloudEvent's registry.tracking_uri
    is ignored (here: no server is named at all, so the fetch says so instead of calling the sender's)."""
    from pipeline_plugin.events import ModelVersionEvent
    from pipeline_plugin.providers.local import fetch_model

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    event = ModelVersionEvent(source="cloudevents", kind="model_version.created", model="churn", version="1",
                              delivery_id="d1", artifact_uri="models:/churn/1",
                              registry={"tracking_uri": "http://attacker.invalid:5000"})
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI is not set") as err:
        fetch_model(event, tmp_path / "dest", lambda _m: None)
    assert "attacker" not in err.value.message
