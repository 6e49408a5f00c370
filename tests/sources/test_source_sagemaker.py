"""SageMaker via EventBridge: only ModelApprovalStatus decides approval; noise gives no event."""

from __future__ import annotations

import json

import pytest
from source_helpers import all_samples, fuzz_parser, load_sample, make_request, sample_path

from pipeline_plugin.errors import AuthenticationError, PayloadError
from pipeline_plugin.sources import get_source, receive

SOURCE = get_source("sagemaker")
SAMPLE = "sagemaker/01_model_package_state_change_approved.json"


def body(**detail):
    doc = json.loads(sample_path(SAMPLE).read_text())["request"]["body"]
    doc["detail"].update(detail)
    return doc


def test_recorded_approval_is_model_version_approved():
    [event] = receive(SOURCE, load_sample(SAMPLE, headers={"Authorization": "Bearer tok"}), "tok")
    assert (event.kind, event.model, event.version) == ("model_version.approved", "churn-model-group", "2")
    assert dict(event.registry) == {"model_package_group": "churn-model-group", "account": "123456789012",
                                    "region": "us-east-2"}
    assert event.approval_status == "Approved"
    assert event.artifact_uri == "s3://mlops-artifacts/churn/pipelines-4r83jejmhorv-Train/output/model.tar.gz"
    assert event.digest.startswith("sha256:4dc8a7e4") and event.image_uri.endswith("sagemaker-xgboost:1.0-1-cpu-py3")
    assert event.delivery_id == "844e2571-85d4-695f-b930-0153b71dcb42"


def test_api_key_header_counts_only_when_configured():
    req = load_sample(SAMPLE, headers={"x-cicd-api-key": "tok"})
    with pytest.raises(AuthenticationError, match="missing token"):
        receive(SOURCE, req, "tok")
    configured = load_sample(SAMPLE, headers={"x-cicd-api-key": "tok"}, options={"token_header": "X-Cicd-Api-Key"})
    [event] = receive(SOURCE, configured, "tok")
    assert event.kind == "model_version.approved"
    wrong = load_sample(SAMPLE, headers={"x-cicd-api-key": "tok2"}, options={"token_header": "x-cicd-api-key"})
    with pytest.raises(AuthenticationError, match="bad token"):
        receive(SOURCE, wrong, "tok")
    missing = load_sample(SAMPLE, options={"token_header": "x-cicd-api-key"})
    del missing.headers["x-cicd-api-key"]
    with pytest.raises(AuthenticationError, match="or header x-cicd-api-key"):
        receive(SOURCE, missing, "tok")


@pytest.mark.parametrize(
    "status, approval, kind",
    [
        ("Completed", "Approved", "model_version.approved"),
        ("Completed", "Rejected", "model_version.rejected"),
        ("Completed", "PendingManualApproval", "model_version.created"),
        ("Deleting", "Approved", "model_version.deleted"),
        ("InProgress", "Approved", None),
        ("Pending", "PendingManualApproval", None),
        ("Failed", "PendingManualApproval", None),
        ("Completed", None, None),
    ],
)
def test_only_completed_packages_and_their_approval_status_decide(status, approval, kind):
    events = SOURCE.parse(make_request(body(ModelPackageStatus=status, ModelApprovalStatus=approval)))
    assert [e.kind for e in events] == ([kind] if kind else [])


def test_repeated_events_for_one_change_share_a_dedupe_key():
    first = SOURCE.parse(make_request(body()))[0]
    retry = body(LastModifiedTime="2026-11-25T03:45:15Z")
    retry["id"] = "another-eventbridge-id"
    second = SOURCE.parse(make_request(retry))[0]
    assert first.delivery_id != second.delivery_id and first.dedupe_key() == second.dedupe_key()


def test_other_detail_types_and_unversioned_packages_give_nothing():
    doc = body()
    doc["detail-type"] = "SageMaker Model Package Group State Change"
    assert SOURCE.parse(make_request(doc)) == []
    doc = body()
    del doc["detail"]["ModelPackageGroupName"]
    assert SOURCE.parse(make_request(doc)) == []


def test_customer_metadata_becomes_tags_and_string_version_is_kept():
    [event] = SOURCE.parse(make_request(body(CustomerMetadataProperties={"team": "risk"}, ModelPackageVersion="3")))
    assert dict(event.tags) == {"team": "risk"} and event.version == "3"


@pytest.mark.parametrize(
    "detail, field",
    [
        ({"ModelPackageVersion": None}, "detail.ModelPackageVersion"),
        ({"ModelPackageVersion": 2.5}, "detail.ModelPackageVersion"),
        ({"ModelPackageGroupName": 5}, "detail.ModelPackageGroupName"),
        ({"ModelApprovalStatus": ["Approved"]}, "detail.ModelApprovalStatus"),
        ({"InferenceSpecification": {"Containers": [1]}}, "detail.InferenceSpecification.Containers[0]"),
        ({"CustomerMetadataProperties": "x"}, "detail.CustomerMetadataProperties"),
    ],
)
def test_bad_input_names_the_field(detail, field):
    with pytest.raises(PayloadError) as info:
        SOURCE.parse(make_request(body(**detail)))
    assert info.value.field == field


@pytest.mark.parametrize("name", all_samples("sagemaker"))
def test_fuzzed_deliveries_only_raise_payload_error(name):
    fuzz_parser(SOURCE.parse, load_sample(name))
