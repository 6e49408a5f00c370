"""Databricks Workspace Model Registry webhooks: the documented payloads (tests/sources/samples/databricks,
built from Databricks' docs) parse to the right kinds; X-Databricks-Signature is the hex HMAC-SHA256
of the raw body; test-mode deliveries are recorded as tests; bad input names the field."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from source_helpers import all_samples, fuzz_parser, load_sample, make_request

from pipeline_plugin.errors import AuthenticationError, PayloadError
from pipeline_plugin.sources import auth, get_source, receive

SECRET = "databricks-s3cret-for-test"
SOURCE = get_source("databricks")


def parse(relative: str, **kw):
    return receive(SOURCE, load_sample(relative, **kw), SECRET)


def signed(body: dict, secret: str = SECRET, **kw):
    raw = json.dumps(body).encode()
    sig = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return make_request(raw, {"X-Databricks-Signature": sig}, **kw)


def test_documented_stage_transition_is_an_alias_with_the_workspace_identity():
    [event] = parse("databricks/01_model_version_transitioned_stage_production.json",
                    options={"host": "https://adb-1234567890123456.7.azuredatabricks.net/"})
    assert (event.kind, event.model, event.version, event.alias) == ("alias.set", "Airline_Delay_SparkML", "8", "production")
    assert dict(event.registry) == {"host": "adb-1234567890123456.7.azuredatabricks.net", "tracking_uri": "databricks"}
    assert event.tags["databricks.from_stage"] == "None" and event.tags["databricks.to_stage"] == "Production"
    assert event.time == "2020-05-19T03:30:29.343000Z"  # event_timestamp 1589859029343 ms
    assert event.source_event_type == "MODEL_VERSION_TRANSITIONED_STAGE" and not event.is_test


def test_every_documented_event_maps_to_its_kind():
    got = {}
    for rel in all_samples("databricks"):
        events = parse(rel)
        got[rel.split("/")[-1]] = [(e.kind, e.version, e.alias, dict(e.tags)) for e in events]
    assert got["02_model_version_tag_set.json"] == [("tag.set", "8", None, {"key1": "value1", "key2": "value2"})]
    assert got["03_comment_created.json"] == []
    assert got["04_model_version_created.json"] == [("model_version.created", "9", None, {})]
    assert got["05_model_version_transitioned_to_staging.json"][0][:3] == ("alias.set", "9", "staging")
    assert got["06_transition_request_to_production_created.json"] == [
        ("tag.set", "9", None, {"databricks.transition_request": "Production"})]
    assert got["07_registered_model_created.json"] == []
    [created] = parse("databricks/04_model_version_created.json")
    assert created.artifact_uri == "models:/Airline_Delay_SparkML/9"


def test_stage_named_by_the_event_and_transition_to_none_removes_the_alias():
    body = {"event": "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "webhook_id": "w1", "event_timestamp": 1, "model_name": "m",
            "version": 3}
    [event] = SOURCE.parse(signed(body))
    assert (event.kind, event.version, event.alias) == ("alias.set", "3", "production")
    body = {"event": "MODEL_VERSION_TRANSITIONED_STAGE", "model_name": "m", "version": "3", "to_stage": "None",
            "from_stage": "Staging"}
    [event] = SOURCE.parse(signed(body))
    assert (event.kind, event.alias) == ("alias.deleted", "staging")


def test_signature_is_hex_hmac_of_the_raw_body():
    req = load_sample("databricks/01_model_version_transitioned_stage_production.json")
    auth.verify(req, SECRET, "databricks-hmac")
    with pytest.raises(AuthenticationError, match="bad signature"):
        auth.verify(req, "another-secret", "databricks-hmac")
    tampered = load_sample("databricks/01_model_version_transitioned_stage_production.json")
    tampered.body = tampered.body.replace(b'"version": "8"', b'"version": "9"')
    with pytest.raises(AuthenticationError, match="bad signature"):
        auth.verify(tampered, SECRET, "databricks-hmac")
    unsigned = make_request(req.body, {})
    with pytest.raises(AuthenticationError, match="missing header X-Databricks-Signature"):
        auth.verify(unsigned, SECRET, "databricks-hmac")


def test_test_mode_deliveries_are_tests_with_their_own_id():
    rel = "databricks/04_model_version_created.json"
    [real] = parse(rel)
    [marked] = parse(rel, query={"test": "true"})
    assert marked.is_test and not real.is_test
    assert marked.delivery_id != real.delivery_id  # a replay marked as a test cannot swallow the real one
    [listed] = parse(rel, options={"test_webhook_ids": ["c5596721253c4b429368cf6f4341b88a"]})
    assert listed.is_test and listed.delivery_id == real.delivery_id
    [again] = parse(rel)
    assert again.delivery_id == real.delivery_id  # a retry is the same delivery


@pytest.mark.parametrize("body, field", [
    ({"webhook_id": "w"}, "event"),
    ({"event": 7}, "event"),
    ({"event": "MODEL_VERSION_CREATED", "version": "1"}, "model_name"),
    ({"event": "MODEL_VERSION_CREATED", "model_name": "m"}, "version"),
    ({"event": "MODEL_VERSION_CREATED", "model_name": "m", "version": [1]}, "version"),
    ({"event": "MODEL_VERSION_CREATED", "model_name": "m", "version": "1", "event_timestamp": "yesterday"}, "event_timestamp"),
    ({"event": "MODEL_VERSION_TRANSITIONED_STAGE", "model_name": "m", "version": "1"}, "to_stage"),
    ({"event": "MODEL_VERSION_TRANSITIONED_STAGE", "model_name": "m", "version": "1", "to_stage": "Prod"}, "to_stage"),
    ({"event": "MODEL_VERSION_TRANSITIONED_STAGE", "model_name": "m", "version": "1", "to_stage": "None"}, "from_stage"),
    ({"event": "MODEL_VERSION_TAG_SET", "model_name": "m", "version": "1", "tags": [{"value": "x"}]}, "tags[0].key"),
    ({"event": "MODEL_VERSION_TAG_SET", "model_name": "m", "version": "1", "tags": []}, "tags"),
    ({"event": "TRANSITION_REQUEST_CREATED", "model_name": "m", "version": "1"}, "to_stage"),
])
def test_bad_input_names_the_field(body, field):
    with pytest.raises(PayloadError) as info:
        SOURCE.parse(signed(body))
    assert info.value.field == field, info.value


def test_parser_only_raises_payload_errors():
    for rel in all_samples("databricks"):
        assert fuzz_parser(SOURCE.parse, load_sample(rel)) > 100
