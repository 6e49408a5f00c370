"""Generic CloudEvents: structured, batch and binary modes, type mapping, Standard Webhooks auth."""

from __future__ import annotations

import base64
import json
import time

import pytest
from source_helpers import fuzz_parser, load_sample, make_request

from pipeline_plugin.errors import AuthenticationError, PayloadError
from pipeline_plugin.sources import Response, auth, get_source, receive
from pipeline_plugin.sources.cloudevents import kind_for_type

SOURCE = get_source("cloudevents")
SECRET = "whsec_" + base64.b64encode(b"cloudevents-test-key-0123456789").decode()


def event(**over):
    doc = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/registries/acme",
        "type": "com.acme.registry.model_version.created",
        "time": "2026-11-25T04:00:00Z",
        "datacontenttype": "application/json",
        "data": {"model": "churn-model", "version": 5, "tags": {"stage_hint": "candidate"},
                 "artifact_uri": "s3://models/churn/5"},
    }
    doc.update(over)
    return doc


def signed(body: bytes, headers: dict | None = None, now: float | None = None, msg_id: str = "msg-1"):
    ts = str(int(time.time()))
    sig = auth.sign(auth.standard_webhooks_key(SECRET), msg_id, ts, body)
    h = {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sig, **(headers or {})}
    return make_request(body, h, now=now if now is not None else time.time())


def test_structured_mode_signed_delivery():
    body = json.dumps(event()).encode()
    [ev] = receive(SOURCE, signed(body, {"Content-Type": "application/cloudevents+json"}), SECRET)
    assert (ev.kind, ev.model, ev.version) == ("model_version.created", "churn-model", "5")
    assert ev.artifact_uri == "s3://models/churn/5" and dict(ev.tags) == {"stage_hint": "candidate"}
    assert ev.registry["ce_source"] == "/registries/acme"
    assert ev.delivery_id == "/registries/acme#evt-1" and ev.time == "2026-11-25T04:00:00Z"


def test_signed_delivery_with_tampered_body_or_stale_timestamp_is_refused():
    body = json.dumps(event()).encode()
    req = signed(body)
    req.body = body.replace(b"churn-model", b"evil-model")
    with pytest.raises(AuthenticationError, match="bad signature"):
        receive(SOURCE, req, SECRET)
    with pytest.raises(AuthenticationError, match="stale timestamp"):
        receive(SOURCE, signed(body, now=time.time() + 3600), SECRET)


def test_a_token_is_accepted_unless_the_config_asks_for_signatures_only():
    req = make_request(event(), {"Authorization": "Bearer plain-token"})
    [ev] = receive(SOURCE, req, "plain-token")
    assert ev.version == "5"
    [ev] = receive(SOURCE, make_request(event(), {}, query={"token": "plain-token"}), "plain-token")
    assert ev.version == "5"
    with pytest.raises(AuthenticationError, match="missing header webhook-signature"):
        receive(SOURCE, req, "plain-token", scheme="standard-webhooks")


def test_batch_mode():
    batch = [event(), event(id="evt-2", type="com.acme.model_version.approved",
                            data={"model": "churn-model", "version": "5", "approval_status": "Approved"})]
    events = SOURCE.parse(make_request(batch, {"Content-Type": "application/cloudevents-batch+json"}))
    assert [(e.kind, e.delivery_id) for e in events] == [
        ("model_version.created", "/registries/acme#evt-1"), ("model_version.approved", "/registries/acme#evt-2")]
    assert events[1].approval_status == "Approved"
    with pytest.raises(PayloadError):
        SOURCE.parse(make_request(event(), {"Content-Type": "application/cloudevents-batch+json"}))


def test_binary_mode():
    headers = {
        "ce-specversion": "1.0", "ce-id": "b-1", "ce-source": "/registries/acme",
        "ce-type": "com.acme.registry.model_version_alias.created", "ce-time": "2026-11-25T04:01:00Z",
        "Content-Type": "application/json",
    }
    body = json.dumps({"name": "churn-model", "version": "5", "alias": "champion"}).encode()
    [ev] = receive(SOURCE, signed(body, headers), SECRET)
    assert (ev.kind, ev.alias, ev.version, ev.delivery_id) == ("alias.set", "champion", "5", "/registries/acme#b-1")
    assert ev.time == "2026-11-25T04:01:00Z"
    headers["Content-Type"] = "text/plain"
    with pytest.raises(PayloadError):
        SOURCE.parse(make_request(body, headers))
    del headers["ce-id"]
    headers["Content-Type"] = "application/json"
    with pytest.raises(PayloadError) as info:
        SOURCE.parse(make_request(body, headers))
    assert info.value.field == "id"


@pytest.mark.parametrize(
    "event_type, kind",
    [
        ("model_version.created", "model_version.created"),
        ("io.mlflow.model_version.created", "model_version.created"),
        ("com.acme.model.registered", "model_version.created"),
        ("Microsoft.MachineLearningServices.ModelRegistered", "model_version.created"),
        ("com.acme.MODEL_VERSION.APPROVED", "model_version.approved"),
        ("com.acme.model.rejected", "model_version.rejected"),
        ("com.acme.model_version.deleted", "model_version.deleted"),
        ("com.acme.alias.set", "alias.set"),
        ("com.acme.model_version_alias.deleted", "alias.deleted"),
        ("com.acme.model_version_tag.set", "tag.set"),
        ("com.acme.tag.deleted", "tag.deleted"),
        ("com.acme.image.pushed", "image.pushed"),
        ("com.acme.model.created", None),  # a registered model, not a version
        ("com.acme.run.finished", None),
        ("created", None),
    ],
)
def test_type_mapping(event_type, kind):
    assert kind_for_type(event_type) == kind


def test_unmapped_types_give_nothing_and_tag_events_read_key_value():
    assert SOURCE.parse(make_request(event(type="com.acme.run.finished"))) == []
    [tag] = SOURCE.parse(make_request(event(type="x.tag.set", data={"model": "m", "version": 1, "key": "k", "value": "v"})))
    assert dict(tag.tags) == {"k": "v"}
    [gone] = SOURCE.parse(make_request(event(type="x.alias.deleted", data={"model": "m", "alias": "champion"})))
    assert gone.version == "*"


def test_data_base64_and_case_insensitive_data_keys():
    data = base64.b64encode(json.dumps({"ModelName": "m", "ModelVersion": 9}).encode()).decode()
    doc = event()
    del doc["data"]
    doc["data_base64"] = data
    [ev] = SOURCE.parse(make_request(doc))
    assert (ev.model, ev.version) == ("m", "9")


def test_options_handshake():
    answer = receive(SOURCE, load_sample("azure-ml/05_CloudEvents_OPTIONS_abuse_protection_handshake.json"), SECRET)
    assert isinstance(answer, Response) and answer.status == 200
    assert answer.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"


@pytest.mark.parametrize(
    "doc, field",
    [
        (event(specversion="0.3"), "specversion"),
        (event(id=None), "id"),
        (event(source=5), "source"),
        (event(data=None), "data"),
        (event(data={"version": "1"}), "data.model"),
        (event(data={"model": "m", "version": [1]}), "data.version"),
        (event(data={"model": "m", "version": "1", "tags": {"a": [1]}}), "data.tags.a"),
        ([event(), event(type=None)], "[1].type"),
        (event(data=None, data_base64="!!"), "data_base64"),
    ],
)
def test_bad_input_names_the_field(doc, field):
    with pytest.raises(PayloadError) as info:
        SOURCE.parse(make_request(doc))
    assert info.value.field == field


def test_fuzzed_structured_batch_and_binary_only_raise_payload_error():
    fuzz_parser(SOURCE.parse, make_request(event()))
    fuzz_parser(SOURCE.parse, make_request([event(), event(id="2")]))
    binary = make_request({"name": "m", "version": "1", "alias": "a"},
                          {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "s", "ce-type": "x.alias.set"})
    fuzz_parser(SOURCE.parse, binary)
