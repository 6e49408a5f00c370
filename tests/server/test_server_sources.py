"""Every source through the listener: recorded deliveries (tests/sources/samples) with each source's
authentication are stored once as the right kind; the wrong credential is 401 and stores nothing;
Event Grid's validation and the CloudEvents OPTIONS handshake are answered and store nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pipeline_plugin.server import Listener, create_app

SAMPLES = Path(__file__).resolve().parents[1] / "sources" / "samples"  # the repository's own copies
TOKEN = "t0ken-for-sources"
ENV = {
    "PIPELINE_PLUGIN_AZUREML_SECRET": TOKEN,
    "PIPELINE_PLUGIN_SAGEMAKER_SECRET": TOKEN,
    "PIPELINE_PLUGIN_HUGGINGFACE_SECRET": TOKEN,
    "PIPELINE_PLUGIN_DOCKER_REGISTRY_SECRET": TOKEN,
    "PIPELINE_PLUGIN_CLOUDEVENTS_SECRET": TOKEN,
}


def sample(relative: str) -> tuple[bytes, dict[str, str]]:
    path = SAMPLES / relative
    if not path.is_file():
        pytest.fail(f"sample {path} is missing from the repository")
    data = json.loads(path.read_text())
    req = data.get("request", data)
    if data.get("raw_body") is not None:
        body = data["raw_body"].encode()
    else:
        body = json.dumps(req["body"]).encode() if req.get("body") is not None else b""
    headers = {k: v for k, v in (req.get("headers") or {}).items() if k.lower() not in ("content-length", "host")}
    return body, headers


def with_auth(source: str, headers: dict[str, str], token: str) -> tuple[dict[str, str], str]:
    """The credential the way each sender sends it; returns headers and a query string."""
    headers = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "x-webhook-secret")}
    if source == "huggingface":
        return {**headers, "X-Webhook-Secret": token}, ""
    if source == "azureml":  # Event Grid cannot set headers: the token rides in the URL
        return headers, f"?token={token}"
    return {**headers, "Authorization": f"Bearer {token}"}, ""


@pytest.fixture
def listener(tmp_path):
    return Listener(tmp_path / "state", environ=ENV, start_worker=False)


CASES = [
    ("azureml", "azure-ml/01_ModelRegistered_eventgrid_schema.json", "model_version.created"),
    ("azureml", "azure-ml/03_ModelRegistered_cloudevents_schema.json", "model_version.created"),
    ("sagemaker", "sagemaker/01_model_package_state_change_approved.json", "model_version.approved"),
    ("huggingface", "huggingface/01_repo_content_update_new_tag.json", None),
    ("docker-registry", "docker-distribution/01_push_manifest_v1.json", "image.pushed"),
]


@pytest.mark.parametrize("source, path, kind", CASES, ids=[c[1].split("/")[-1] for c in CASES])
def test_recorded_delivery_is_stored_once(listener, source, path, kind):
    c = TestClient(create_app(listener))
    body, headers = sample(path)
    headers, query = with_auth(source, headers, TOKEN)
    r = c.post(f"/webhooks/{source}{query}", content=body, headers=headers)
    assert r.status_code == 200, r.text
    ids = r.json()["stored"]
    assert ids and r.json()["duplicate"] is False
    events = [listener.inbox.get(i).event for i in ids]
    assert all(e.source == source and e.model and e.version for e in events)
    if kind:
        assert kind in {e.kind for e in events}
    again = c.post(f"/webhooks/{source}{query}", content=body, headers=headers)
    assert again.status_code == 200 and again.json() == {"stored": ids, "duplicate": True}
    assert len(listener.inbox.list()) == len(set(ids))


@pytest.mark.parametrize("source, path, kind", CASES, ids=[c[1].split("/")[-1] for c in CASES])
def test_wrong_credential_is_401_and_stores_nothing(listener, source, path, kind):
    c = TestClient(create_app(listener))
    body, headers = sample(path)
    headers, query = with_auth(source, headers, "wrong-" + TOKEN)
    r = c.post(f"/webhooks/{source}{query}", content=body, headers=headers)
    assert r.status_code == 401, r.text
    assert TOKEN not in r.text
    stripped, _ = with_auth(source, headers, "")
    stripped.pop("Authorization", None)
    stripped.pop("X-Webhook-Secret", None)
    assert c.post(f"/webhooks/{source}", content=body, headers=stripped).status_code == 401
    assert listener.inbox.list() == []


def test_event_grid_validation_handshake_is_answered_after_auth(listener):
    c = TestClient(create_app(listener))
    body, headers = sample("azure-ml/04_SubscriptionValidationEvent_eventgrid_schema.json")
    r = c.post(f"/webhooks/azureml?token={TOKEN}", content=body, headers=headers)
    assert r.status_code == 200
    assert r.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert c.post("/webhooks/azureml?token=nope", content=body, headers=headers).status_code == 401
    assert listener.inbox.list() == []


def test_cloudevents_options_handshake(listener):
    c = TestClient(create_app(listener))
    for source in ("azureml", "cloudevents"):
        r = c.options(
            f"/webhooks/{source}",
            headers={"WebHook-Request-Origin": "eventgrid.azure.net", "WebHook-Request-Rate": "120"},
        )
        assert r.status_code == 200, (source, r.text)
        assert r.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
        assert r.headers["WebHook-Allowed-Rate"] == "*"
    # an OPTIONS that is no handshake is a 400 naming the header, not a 500
    r = c.options("/webhooks/cloudevents")
    assert r.status_code == 400 and r.json()["field"] == "WebHook-Request-Origin"
    assert listener.inbox.list() == []
