"""Weights & Biases registry automations: payloads rendered from the documented template variables
(tests/sources/samples/wandb, built from W&B's docs) parse to the right kinds; the Test button's
unrendered template is a test delivery; bad input names the field."""

from __future__ import annotations

import json

import pytest
from source_helpers import all_samples, fuzz_parser, load_sample, make_request

from pipeline_plugin.errors import AuthenticationError, PayloadError
from pipeline_plugin.sources import get_source, receive

TOKEN = "wandb-t0ken-for-test"
SOURCE = get_source("wandb")


def parse(relative: str, **kw):
    return receive(SOURCE, load_sample(relative, **kw), TOKEN)


def test_link_artifact_is_a_new_version_of_the_collection_in_its_entity_and_project():
    [event] = parse("wandb/01_link_artifact_suggested_template.json")
    assert (event.kind, event.model, event.version) == ("model_version.created", "fraud-detector", "v3")
    assert dict(event.registry) == {"entity": "acme-ml", "project": "wandb-registry-model"}
    assert event.artifact_uri == "wandb-artifact://_id/QXJ0aWZhY3Q6NTE3ODg5ODg3"
    assert event.tags["wandb.author"] == "jane-ml" and event.source_event_type == "LINK_ARTIFACT"
    assert not event.is_test


def test_alias_added_is_alias_set():
    [event] = parse("wandb/02_add_artifact_alias_suggested_template.json")
    assert (event.kind, event.model, event.version, event.alias) == ("alias.set", "fraud-detector", "v3", "production")


def test_github_dispatch_shape_from_the_docs_reads_client_payload():
    # W&B's own example: fields under client_payload, version string ending in the alias
    [event] = parse("wandb/03_add_artifact_alias_github_dispatch_shape.json")
    assert (event.kind, event.model, event.alias) == ("alias.set", "fraud-detector", "production")
    assert event.version == "QXJ0aWZhY3Q6NTE3ODg5ODg3"  # the immutable artifact id, not the moving alias
    assert dict(event.registry) == {"entity": "acme-ml", "project": "model-registry"}


def test_test_button_with_the_unrendered_template_is_a_test_delivery():
    [event] = parse("wandb/04_test_button_unrendered_template.json")
    assert event.is_test
    body = json.loads(load_sample("wandb/01_link_artifact_suggested_template.json").body)
    [flagged] = SOURCE.parse(make_request({**body, "test": True}))
    assert flagged.is_test


@pytest.mark.parametrize("event_type, kind", [("LINK_MODEL", "model_version.created"),  # the backend's name
                                              ("CREATE_ARTIFACT", "model_version.created"),
                                              ("UPDATE_ARTIFACT_ALIAS", "alias.set")])
def test_backend_event_names_map_too(event_type, kind):
    body = json.loads(load_sample("wandb/02_add_artifact_alias_suggested_template.json").body)
    [event] = SOURCE.parse(make_request({**body, "event_type": event_type}))
    assert (event.kind, event.version) == (kind, "v3")


def test_run_events_announce_no_version():
    assert SOURCE.parse(make_request({"event_type": "RUN_METRIC", "project_name": "p", "entity_name": "e"})) == []


def test_bearer_token_is_required():
    req = load_sample("wandb/01_link_artifact_suggested_template.json")
    receive(SOURCE, req, TOKEN)
    with pytest.raises(AuthenticationError, match="bad token"):
        receive(SOURCE, req, "other-token")
    bare = load_sample("wandb/01_link_artifact_suggested_template.json")
    del bare.headers["Authorization"]
    with pytest.raises(AuthenticationError, match="missing token"):
        receive(SOURCE, bare, TOKEN)


GOOD = {"event_type": "LINK_ARTIFACT", "artifact_version_string": "e/p/m:v1"}


@pytest.mark.parametrize("body, field", [
    ({"artifact_version_string": "e/p/m:v1"}, "event_type"),
    ({"event_type": "LINK_ARTIFACT"}, "artifact_version_string"),
    ({**GOOD, "artifact_version_string": "fraud-detector"}, "artifact_version_string"),
    ({**GOOD, "artifact_version_string": 3}, "artifact_version_string"),
    ({**GOOD, "event_type": "ADD_ARTIFACT_ALIAS"}, "alias"),
    ({**GOOD, "event_type": "ADD_ARTIFACT_TAG"}, "tag"),
    ({**GOOD, "entity_name": 5}, "entity_name"),
    ({**GOOD, "test": "yes"}, "test"),
    ({"event_type": "BUILD_AND_DEPLOY", "client_payload": {"artifact_version_string": "e/p/m:v1"}}, "client_payload.event_type"),
    ({"event_type": "LINK_ARTIFACT", "client_payload": {}}, "client_payload.artifact_version_string"),
    ({"event_type": "LINK_ARTIFACT", "client_payload": []}, "client_payload"),
])
def test_bad_input_names_the_field(body, field):
    with pytest.raises(PayloadError) as info:
        SOURCE.parse(make_request(body))
    assert info.value.field == field, info.value


def test_parser_only_raises_payload_errors():
    for rel in all_samples("wandb"):
        assert fuzz_parser(SOURCE.parse, load_sample(rel)) > 100
