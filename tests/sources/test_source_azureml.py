"""Azure ML via Event Grid: both schemas, key casing, int versions, handshakes and their auth."""

from __future__ import annotations

import copy
import json

import pytest
from source_helpers import all_samples, fuzz_parser, load_sample, make_request, sample_path

from pipeline_plugin.errors import AuthenticationError, PayloadError
from pipeline_plugin.sources import Response, get_source, receive

SOURCE = get_source("azureml")
TOKEN = "eg-token-123"
EVENTGRID = "azure-ml/01_ModelRegistered_eventgrid_schema.json"
CLOUDEVENTS = "azure-ml/03_ModelRegistered_cloudevents_schema.json"
VALIDATION = "azure-ml/04_SubscriptionValidationEvent_eventgrid_schema.json"
OPTIONS = "azure-ml/05_CloudEvents_OPTIONS_abuse_protection_handshake.json"
WORKSPACE = {
    "subscription": "00000000-1111-2222-3333-444444444444",
    "resource_group": "rg-mlops",
    "workspace": "ws-prod",
}


def sample_body(name):
    return json.loads(sample_path(name).read_text())["request"]["body"]


@pytest.mark.parametrize("name, event_id", [
    (EVENTGRID, "3b73ee51-bbf4-480d-9112-cfc23b41bfdb"),
    (CLOUDEVENTS, "831e1650-001e-001b-66ab-eeb76e069631"),
])
def test_model_registered_in_both_schemas(name, event_id):
    [event] = receive(SOURCE, load_sample(name, query={"token": TOKEN}), TOKEN)
    assert (event.kind, event.model, event.version) == ("model_version.created", "churn-model", "7")
    assert dict(event.registry) == WORKSPACE
    assert event.tags["stage_hint"] == "candidate"
    assert event.delivery_id == event_id
    assert event.artifact_uri == (
        "azureml://subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg-mlops"
        "/workspaces/ws-prod/models/churn-model/versions/7"
    )


def test_pascal_case_keys_and_integer_version_as_in_the_azure_docs():
    doc = sample_body(EVENTGRID)
    doc[0]["data"] = {"ModelName": "churn-model", "ModelVersion": 20, "ModelTags": {"Team": "risk"},
                      "ModelProperties": {"x": 1}}
    [event] = SOURCE.parse(make_request(doc))
    assert (event.model, event.version, dict(event.tags)) == ("churn-model", "20", {"Team": "risk"})


def test_cloudevents_batch_and_eventgrid_batch_give_one_event_each():
    one = sample_body(CLOUDEVENTS)
    two = copy.deepcopy(one)
    two["id"], two["data"]["modelVersion"] = "other-id", 8
    events = SOURCE.parse(make_request([one, two], {"Content-Type": "application/cloudevents-batch+json"}))
    assert [(e.version, e.delivery_id) for e in events] == [("7", one["id"]), ("8", "other-id")]
    grid = sample_body(EVENTGRID)
    grid.append(dict(grid[0], id="second", data={"modelName": "fraud", "modelVersion": "1"}))
    assert [e.model for e in SOURCE.parse(make_request(grid))] == ["churn-model", "fraud"]


def test_subject_is_the_fallback_for_name_and_version():
    doc = sample_body(EVENTGRID)
    doc[0]["data"] = {}
    [event] = SOURCE.parse(make_request(doc))
    assert (event.model, event.version) == ("churn-model", "7")


def test_other_azure_events_are_not_versions():
    doc = sample_body(EVENTGRID)
    for event_type in ("Microsoft.MachineLearningServices.ModelDeployed",
                       "Microsoft.MachineLearningServices.RunCompleted",
                       "Microsoft.EventGrid.SubscriptionDeletedEvent"):
        doc[0]["eventType"] = event_type
        assert SOURCE.parse(make_request(doc)) == []


def test_validation_handshake_answers_200_with_the_code_after_the_token_is_checked():
    answer = receive(SOURCE, load_sample(VALIDATION, query={"token": TOKEN}), TOKEN)
    expected = json.loads(sample_path(VALIDATION).read_text())["expected_response"]
    assert isinstance(answer, Response)
    assert answer.status == expected["status"] == 200
    assert answer.body == expected["body"]
    with pytest.raises(AuthenticationError, match="missing token"):
        receive(SOURCE, load_sample(VALIDATION), TOKEN)
    with pytest.raises(AuthenticationError, match="bad token"):
        receive(SOURCE, load_sample(VALIDATION, query={"token": "guess"}), TOKEN)


def test_validation_header_without_a_validation_event_is_a_400():
    req = load_sample(VALIDATION)
    req.body = json.dumps(sample_body(EVENTGRID)).encode()
    with pytest.raises(PayloadError) as info:
        SOURCE.handshake(req)
    assert info.value.field == "[0].eventType"
    bad_code = sample_body(VALIDATION)
    bad_code[0]["data"]["validationCode"] = 42
    with pytest.raises(PayloadError) as info:
        SOURCE.handshake(make_request(bad_code, {"aeg-event-type": "SubscriptionValidation"}))
    assert info.value.field == "[0].data.validationCode"


def test_options_handshake_echoes_origin_without_a_token():
    answer = receive(SOURCE, load_sample(OPTIONS), TOKEN)
    expected = json.loads(sample_path(OPTIONS).read_text())["expected_response"]
    assert answer.status == 200
    for header in ("WebHook-Allowed-Origin", "WebHook-Allowed-Rate", "Allow"):
        assert answer.headers[header] == expected["headers"][header]
    no_rate = receive(SOURCE, make_request(b"", {"WebHook-Request-Origin": "eventgrid.azure.net"}, method="OPTIONS"), TOKEN)
    assert "WebHook-Allowed-Rate" not in no_rate.headers
    with pytest.raises(PayloadError) as info:
        receive(SOURCE, make_request(b"", {}, method="OPTIONS"), TOKEN)
    assert info.value.field == "WebHook-Request-Origin"


def test_deliveries_need_the_token():
    with pytest.raises(AuthenticationError):
        receive(SOURCE, load_sample(EVENTGRID), TOKEN)
    [event] = receive(SOURCE, load_sample(EVENTGRID, headers={"Authorization": f"Bearer {TOKEN}"}), TOKEN)
    assert event.version == "7"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d[0].pop("eventType"), "[0].eventType"),
        (lambda d: d[0].pop("id"), "[0].id"),
        (lambda d: d[0].update(data="x"), "[0].data"),
        (lambda d: d[0].update(subject="", data={"modelName": "m"}), "[0].data.modelVersion"),
        (lambda d: d[0]["data"].update(modelVersion=True), "[0].data.modelVersion"),
        (lambda d: d[0]["data"].update(modelTags=["a"]), "[0].data.modelTags"),
        (lambda d: d.append(3), "[1]"),
    ],
)
def test_bad_input_names_the_json_path(mutate, field):
    doc = sample_body(EVENTGRID)
    mutate(doc)
    with pytest.raises(PayloadError) as info:
        SOURCE.parse(make_request(doc))
    assert info.value.field == field


@pytest.mark.parametrize("name", all_samples("azure-ml"))
def test_fuzzed_deliveries_only_raise_payload_error(name):
    fuzz_parser(SOURCE.parse, load_sample(name))
    fuzz_parser(SOURCE.handshake, load_sample(name), returns=(Response, type(None)))
