"""MLflow source: recorded deliveries, MLflow's own test_webhook delivery, mapping, bad input."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from source_helpers import MLFLOW_SAMPLE_SECRET, all_samples, fuzz_parser, load_sample, make_request

from pipeline_plugin.errors import AuthenticationError, PayloadError
from pipeline_plugin.sources import Headers, Request, get_source, receive
from pipeline_plugin.sources import mlflow as mlflow_source

SOURCE = get_source("mlflow")


def signed_sample(name: str) -> Request:
    req = load_sample(name)
    req.now = float(req.headers["X-MLflow-Timestamp"])
    return req


EXPECTED = {
    "mlflow/02_model_version.created_v1_via_register_model.json": dict(
        kind="model_version.created", model="churn-model", version="1", tags={"stage_hint": "candidate"},
        artifact_uri="models:/m-7b514f5588804e549cfdbb1699921ceb", alias=None,
        delivery_id="58216f52-1ffc-41bb-b0df-1f6a308dae76", time="2026-11-25T03:26:08.314052+00:00",
    ),
    "mlflow/04_model_version_alias.created_champion_v2.json": dict(
        kind="alias.set", model="churn-model", version="2", alias="champion", tags={},
        delivery_id="82e91c80-d7fd-424e-980b-9806e707b594",
    ),
    "mlflow/05_model_version_tag.set.json": dict(
        kind="tag.set", model="churn-model", version="2", tags={"validation_status": "passed"},
        delivery_id="bf718686-da43-43e7-8c8e-5dc6586e1f8c",
    ),
}


@pytest.mark.parametrize("name", all_samples("mlflow"))
def test_recorded_deliveries_verify_and_normalise(name):
    req = signed_sample(name)
    result = receive(SOURCE, req, MLFLOW_SAMPLE_SECRET)
    assert isinstance(result, list) and len(result) == 1
    event = result[0].to_dict()
    assert event["source"] == "mlflow" and event["is_test"] is False
    for key, value in EXPECTED[name].items():
        assert event[key] == value, key


def test_every_recorded_sample_has_an_expectation():
    assert set(all_samples("mlflow")) == set(EXPECTED)


def test_receive_refuses_a_wrong_signature_before_parsing():
    req = signed_sample(all_samples("mlflow")[0])
    with pytest.raises(AuthenticationError):
        receive(SOURCE, req, "wrong")


def test_tracking_uri_comes_from_config_or_query():
    name = all_samples("mlflow")[0]
    [from_options] = SOURCE.parse(load_sample(name, options={"tracking_uri": "http://mlflow:5000"}))
    assert from_options.registry == {"tracking_uri": "http://mlflow:5000"}
    listed = {"tracking_uris": ["http://mlflow:5001"]}
    [from_query] = SOURCE.parse(load_sample(name, query={"tracking_uri": "http://mlflow:5001"}, options=listed))
    assert from_query.registry_key() == "tracking_uri=http://mlflow:5001"
    # the query is outside the signature: a server the config does not name is refused
    with pytest.raises(PayloadError) as err:
        SOURCE.parse(load_sample(name, query={"tracking_uri": "http://mlflow:5001"}))
    assert err.value.field == "?tracking_uri"
    [unknown] = SOURCE.parse(load_sample(name))
    assert unknown.registry == {}


def body(entity, action, data, **extra):
    return {"entity": entity, "action": action, "timestamp": "2026-11-25T03:26:08+00:00", "data": data, **extra}


def parse(doc, **headers):
    return SOURCE.parse(make_request(doc, {"X-MLflow-Delivery-Id": "d-1", **headers}))


def test_mapping_of_other_events():
    [deleted_tag] = parse(body("model_version_tag", "deleted", {"name": "m", "version": "3", "key": "k"}))
    assert (deleted_tag.kind, deleted_tag.version, dict(deleted_tag.tags)) == ("tag.deleted", "3", {"k": ""})
    [deleted_alias] = parse(body("model_version_alias", "deleted", {"name": "m", "alias": "champion"}))
    assert (deleted_alias.kind, deleted_alias.alias, deleted_alias.version) == ("alias.deleted", "champion", "*")
    [ws] = parse(body("model_version", "created", {"name": "m", "version": 4, "source": "s3://b/m"}, workspace="team-a"))
    assert ws.version == "4" and ws.registry == {"workspace": "team-a"} and ws.artifact_uri == "s3://b/m"
    assert parse(body("registered_model", "created", {"name": "m", "tags": {}, "description": None})) == []
    assert parse(body("prompt_version", "created", {"name": "p", "version": "1"})) == []


def test_delivery_without_id_gets_a_stable_body_digest():
    doc = body("model_version", "created", {"name": "m", "version": "1"})
    first = SOURCE.parse(make_request(doc))[0].delivery_id
    again = SOURCE.parse(make_request(doc))[0].delivery_id
    assert first == again and first.startswith("sha256:")


@pytest.mark.parametrize(
    "doc, field",
    [
        ({"action": "created", "data": {}}, "entity"),
        (body("model_version", "created", None), "data"),
        (body("model_version", "created", []), "data"),
        (body("model_version", "created", {"version": "1"}), "data.name"),
        (body("model_version", "created", {"name": 7, "version": "1"}), "data.name"),
        (body("model_version", "created", {"name": "m"}), "data.version"),
        (body("model_version", "created", {"name": "m", "version": 1.5}), "data.version"),
        (body("model_version", "created", {"name": "m", "version": "1", "tags": ["a"]}), "data.tags"),
        (body("model_version", "created", {"name": "m", "version": "1", "tags": {"a": {}}}), "data.tags.a"),
        (body("model_version_tag", "set", {"name": "m", "version": "1", "value": "v"}), "data.key"),
        (body("model_version_alias", "created", {"name": "m", "version": "1"}), "data.alias"),
        ([1, 2], "(body)"),
    ],
)
def test_bad_input_names_the_field(doc, field):
    with pytest.raises(PayloadError) as info:
        parse(doc)
    assert info.value.field == field
    assert info.value.http_status == 400


@pytest.mark.parametrize("raw", [b"", b"not json", b"\xff\xfe{", b"[" * 50_000])
def test_not_json_is_a_400(raw):
    with pytest.raises(PayloadError) as info:
        SOURCE.parse(make_request(raw))
    assert info.value.field == "(body)"


@pytest.mark.parametrize("name", all_samples("mlflow"))
def test_fuzzed_deliveries_only_raise_payload_error(name):
    assert fuzz_parser(SOURCE.parse, load_sample(name)) > 100


# ---- MLflow's test_webhook --------------------------------------------------------------------
def test_example_payloads_match_installed_mlflow():
    from mlflow.entities.webhook import WebhookEvent
    from mlflow.webhooks.types import get_example_payload_for_event

    for event_type, data in mlflow_source.EXAMPLE_PAYLOADS.items():
        entity, action = event_type.split(".")
        assert dict(get_example_payload_for_event(WebhookEvent(entity, action))) == data, event_type


class _Capture(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        length = int(self.headers.get("Content-Length", 0))
        type(self).received.append((dict(self.headers.items()), self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def capture_server(monkeypatch):
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "http,https")
    monkeypatch.setenv("MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS", "true")
    _Capture.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/webhooks/mlflow", _Capture.received
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "event_type, kind",
    [
        ("model_version.created", "model_version.created"),
        ("model_version_tag.set", "tag.set"),
        ("model_version_tag.deleted", "tag.deleted"),
        ("model_version_alias.created", "alias.set"),
        ("model_version_alias.deleted", "alias.deleted"),
        ("registered_model.created", None),
    ],
)
def test_mlflow_test_webhook_delivery_is_flagged_as_test(capture_server, event_type, kind):
    """MLflow's own test_webhook code sends a real HTTP delivery; it verifies and is_test is set."""
    import time

    from mlflow.entities.webhook import Webhook, WebhookEvent
    from mlflow.webhooks.delivery import test_webhook

    url, received = capture_server
    entity, action = event_type.split(".")
    hook = Webhook("wh-1", "ci", url, [WebhookEvent(entity, action)], 0, 0, secret="hook-secret")
    result = test_webhook(hook)
    assert result.success, result.error_message
    [(headers, raw)] = received
    req = Request("POST", "/webhooks/mlflow", Headers(headers), raw, now=time.time())
    events = receive(SOURCE, req, "hook-secret")
    if kind is None:
        assert events == []
        return
    [event] = events
    assert event.kind == kind and event.model == "example_model" and event.is_test is True
    assert event.delivery_id == headers["X-MLflow-Delivery-Id"]


def test_a_real_model_named_example_model_is_not_a_test():
    [event] = parse(body("model_version", "created", {"name": "example_model", "version": "7", "tags": {"team": "a"}}))
    assert event.is_test is False
