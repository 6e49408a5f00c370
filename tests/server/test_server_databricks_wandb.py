"""Databricks and W&B deliveries through the real listener app: the vendors' documented payloads
(tests/sources/samples) are stored once as the right kind with the registry identity from the
config; a bad signature or token is 401 and stores nothing; bad input is a 400 naming the field;
Databricks test-mode deliveries are stored as tests."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pipeline_plugin.server import Listener, create_app, load_config

SAMPLES = Path(__file__).resolve().parents[1] / "sources" / "samples"
DATABRICKS_SECRET = "databricks-s3cret-for-test"  # the samples' signing secret
WANDB_TOKEN = "wandb-t0ken-for-test"
ENV = {"PIPELINE_PLUGIN_DATABRICKS_SECRET": DATABRICKS_SECRET, "PIPELINE_PLUGIN_WANDB_SECRET": WANDB_TOKEN}
HOST = "https://adb-1234567890123456.7.azuredatabricks.net"


def sample(relative: str) -> tuple[bytes, dict[str, str]]:
    data = json.loads((SAMPLES / relative).read_text())
    body = data["raw_body"].encode() if data.get("raw_body") is not None else json.dumps(data["request"]["body"]).encode()
    return body, dict(data["request"]["headers"])


@pytest.fixture
def client(tmp_path):
    config_file = tmp_path / "listener.yml"
    config_file.write_text(f"sources:\n  databricks:\n    options:\n      host: {HOST}\n")
    listener = Listener(tmp_path / "state", environ=ENV, start_worker=False, config=load_config(config_file))
    return listener, TestClient(create_app(listener))


CASES = [
    ("databricks", "databricks/01_model_version_transitioned_stage_production.json", "alias.set"),
    ("databricks", "databricks/04_model_version_created.json", "model_version.created"),
    ("databricks", "databricks/06_transition_request_to_production_created.json", "tag.set"),
    ("wandb", "wandb/01_link_artifact_suggested_template.json", "model_version.created"),
    ("wandb", "wandb/02_add_artifact_alias_suggested_template.json", "alias.set"),
    ("wandb", "wandb/03_add_artifact_alias_github_dispatch_shape.json", "alias.set"),
]


@pytest.mark.parametrize("source, path, kind", CASES, ids=[c[1] for c in CASES])
def test_documented_delivery_is_stored_once(client, source, path, kind):
    listener, c = client
    body, headers = sample(path)
    r = c.post(f"/webhooks/{source}", content=body, headers=headers)
    assert r.status_code == 200, r.text
    [event_id] = r.json()["stored"]
    event = listener.inbox.get(event_id).event
    assert (event.source, event.kind, event.is_test) == (source, kind, False)
    if source == "databricks":
        assert event.registry["host"] == "adb-1234567890123456.7.azuredatabricks.net"
    else:
        assert set(event.registry) == {"entity", "project"}
    again = c.post(f"/webhooks/{source}", content=body, headers=headers)
    assert again.status_code == 200 and again.json() == {"stored": [event_id], "duplicate": True}
    assert len(listener.inbox.list()) == 1


def test_one_transition_announced_by_two_databricks_events_is_stored_once(client):
    # a webhook on MODEL_VERSION_TRANSITIONED_STAGE and ..._TO_PRODUCTION sends both for one change
    listener, c = client
    first = {"event": "MODEL_VERSION_TRANSITIONED_STAGE", "webhook_id": "w", "event_timestamp": 1589859029343,
             "model_name": "m", "version": "8", "to_stage": "Production", "from_stage": "Staging"}
    second = {**first, "event": "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION"}
    ids = []
    for body in (first, second):
        raw = json.dumps(body).encode()
        sig = hmac.new(DATABRICKS_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        r = c.post("/webhooks/databricks", content=raw, headers={"X-Databricks-Signature": sig})
        assert r.status_code == 200, r.text
        ids.append(r.json()["stored"])
    assert ids[0] == ids[1] and len(listener.inbox.list()) == 1


@pytest.mark.parametrize("source, path", [(s, p) for s, p, _ in CASES], ids=[c[1] for c in CASES])
def test_bad_signature_or_token_is_401_and_stores_nothing(client, source, path):
    listener, c = client
    body, headers = sample(path)
    if source == "databricks":
        wrong = {**headers, "X-Databricks-Signature": hmac.new(b"wrong", body, hashlib.sha256).hexdigest()}
        missing = {k: v for k, v in headers.items() if k != "X-Databricks-Signature"}
        tampered_body = body.replace(b"Airline_Delay_SparkML", b"Another_Model")
        assert c.post("/webhooks/databricks", content=tampered_body, headers=headers).status_code == 401
    else:
        wrong = {**headers, "Authorization": "Bearer wrong-" + WANDB_TOKEN}
        missing = {k: v for k, v in headers.items() if k != "Authorization"}
    r = c.post(f"/webhooks/{source}", content=body, headers=wrong)
    assert r.status_code == 401, r.text
    assert DATABRICKS_SECRET not in r.text and WANDB_TOKEN not in r.text
    assert c.post(f"/webhooks/{source}", content=body, headers=missing).status_code == 401
    assert listener.inbox.list() == []


def test_bad_input_is_a_400_naming_the_field(client):
    listener, c = client
    raw = json.dumps({"event": "MODEL_VERSION_CREATED", "model_name": "m"}).encode()
    sig = hmac.new(DATABRICKS_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    r = c.post("/webhooks/databricks", content=raw, headers={"X-Databricks-Signature": sig})
    assert r.status_code == 400 and r.json()["field"] == "version", r.text
    r = c.post("/webhooks/wandb", json={"event_type": "LINK_ARTIFACT", "artifact_version_string": "fraud-detector"},
               headers={"Authorization": f"Bearer {WANDB_TOKEN}"})
    assert r.status_code == 400 and r.json()["field"] == "artifact_version_string", r.text
    assert "<entity>/<project>/<collection>:<version>" in r.json()["message"]
    assert listener.inbox.list() == []


def test_test_deliveries_are_recorded_as_tests(client):
    listener, c = client
    body, headers = sample("databricks/04_model_version_created.json")
    r = c.post("/webhooks/databricks?test=true", content=body, headers=headers)
    assert r.status_code == 200, r.text
    [test_id] = r.json()["stored"]
    assert listener.inbox.get(test_id).event.is_test
    body, headers = sample("wandb/04_test_button_unrendered_template.json")
    r = c.post("/webhooks/wandb", content=body, headers=headers)
    assert r.status_code == 200, r.text
    [wandb_id] = r.json()["stored"]
    assert listener.inbox.get(wandb_id).event.is_test


def test_events_without_a_version_store_nothing(client):
    listener, c = client
    for path in ("databricks/03_comment_created.json", "databricks/07_registered_model_created.json"):
        body, headers = sample(path)
        r = c.post("/webhooks/databricks", content=body, headers=headers)
        assert r.status_code == 200 and r.json()["stored"] == [], r.text
    assert listener.inbox.list() == []


def test_rules_match_the_stored_events_by_registry_identity(client, tmp_path):
    from pipeline_plugin.rules import evaluate, load_rules

    folder = tmp_path / "triggers"
    folder.mkdir()
    (folder / "rules.yml").write_text(
        "- name: databricks-production\n"
        "  match: {source: databricks, kind: alias.set, alias: production,"
        " registry: {host: 'adb-*.azuredatabricks.net'}}\n"
        "- name: wandb-production\n"
        "  match: {source: wandb, kind: alias.set, alias: production,"
        " registry: {entity: acme-ml, project: wandb-registry-model}}\n"
    )
    rules = {r.name: r for r in load_rules(folder)}
    listener, c = client
    stored = {}
    for source, path in (("databricks", "databricks/01_model_version_transitioned_stage_production.json"),
                         ("wandb", "wandb/02_add_artifact_alias_suggested_template.json"),
                         ("wandb", "wandb/03_add_artifact_alias_github_dispatch_shape.json")):
        body, headers = sample(path)
        [event_id] = c.post(f"/webhooks/{source}", content=body, headers=headers).json()["stored"]
        stored[path] = listener.inbox.get(event_id).event
    assert evaluate(rules["databricks-production"], stored[CASES[0][1]]).matched
    assert evaluate(rules["wandb-production"], stored["wandb/02_add_artifact_alias_suggested_template.json"]).matched
    # another W&B project (the docs' model-registry) is another registry
    other = evaluate(rules["wandb-production"], stored["wandb/03_add_artifact_alias_github_dispatch_shape.json"])
    assert not other.matched and other.condition == "registry"
    # a Databricks test-mode delivery (the test endpoint's mock transition) is recorded, never matched
    raw = json.dumps({"event": "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "webhook_id": "t", "event_timestamp": 1,
                      "model_name": "mock", "version": "1", "to_stage": "Production", "from_stage": "None"}).encode()
    sig = hmac.new(DATABRICKS_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    r = c.post("/webhooks/databricks?test=true", content=raw, headers={"X-Databricks-Signature": sig})
    [test_id] = r.json()["stored"]
    test_event = listener.inbox.get(test_id).event
    assert test_event.is_test and test_event.alias == "production"
    assert not evaluate(rules["databricks-production"], test_event).matched
