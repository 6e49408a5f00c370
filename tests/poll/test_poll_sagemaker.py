"""Polling SageMaker's model registry (ListModelPackages with the approval status) through boto3
against moto's server; a version the EventBridge webhook announced and the poller lists is one event."""

from __future__ import annotations

import json

import pytest

from pipeline_plugin.cli import main
from pipeline_plugin.inbox import Inbox
from pipeline_plugin.sources import Request
from pipeline_plugin.sources.sagemaker import SOURCE
from tests.services import sagemaker_api

REGION = "eu-west-1"


@pytest.fixture
def sagemaker(tmp_path, monkeypatch):
    import boto3

    with sagemaker_api(tmp_path) as api:
        for name, value in (("AWS_ENDPOINT_URL", api.url), ("AWS_ACCESS_KEY_ID", "testing"),
                            ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", REGION)):
            monkeypatch.setenv(name, value)
        yield boto3.client("sagemaker", region_name=REGION)


def poll(capsys, state, *args):
    capsys.readouterr()
    code = main(["poll", "--source", "sagemaker", "--once", "--json", "--state-dir", str(state), *args])
    out = capsys.readouterr()
    return code, json.loads(out.out)["sources"]["sagemaker"], out.err


def package(sm, group: str, approval: str) -> str:
    spec = {"Containers": [{"Image": f"123456789012.dkr.ecr.{REGION}.amazonaws.com/{group}:1",
                            "ModelDataUrl": f"s3://models/{group}/model.tar.gz"}],
            "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]}
    return sm.create_model_package(ModelPackageGroupName=group, InferenceSpecification=spec,
                                   ModelApprovalStatus=approval,
                                   CustomerMetadataProperties={"team": "risk"})["ModelPackageArn"]


def test_list_model_packages_with_approval_status(sagemaker, tmp_path, capsys):
    sm = sagemaker
    sm.create_model_package_group(ModelPackageGroupName="credit")
    sm.create_model_package_group(ModelPackageGroupName="other")
    arns = [package(sm, "credit", a) for a in ("PendingManualApproval", "Approved", "Rejected")]
    package(sm, "other", "Approved")
    state = tmp_path / "state"

    # EventBridge announced version 2's approval before anything was polled
    body = json.dumps({"version": "0", "id": "eb-1", "detail-type": "SageMaker Model Package State Change",
                       "source": "aws.sagemaker", "account": "123456789012", "time": "2026-12-06T00:00:00Z",
                       "region": REGION, "resources": [arns[1]],
                       "detail": {"ModelPackageGroupName": "credit", "ModelPackageVersion": 2,
                                  "ModelPackageArn": arns[1], "ModelPackageStatus": "Completed",
                                  "ModelApprovalStatus": "Approved"}}).encode()
    webhook = SOURCE.parse(Request("POST", "/webhooks/sagemaker", {}, body))
    assert Inbox(state).put("sagemaker", webhook).duplicate is False

    code, counts, err = poll(capsys, state, "--option", "model_package_groups=[credit]")
    assert code == 0, err
    # the first poll is a baseline (versions 1 and 3 stored as ignored); version 2: the webhook's event
    assert (counts["seen"], counts["new"], counts["baseline"], counts["duplicate"]) == (3, 0, 2, 1)
    events = {e.event.version: e.event for e in Inbox(state).list()}
    assert {v: (e.kind, e.approval_status) for v, e in events.items()} == {
        "1": ("model_version.created", "PendingManualApproval"),
        "2": ("model_version.approved", "Approved"),
        "3": ("model_version.rejected", "Rejected")}
    first = events["1"]
    assert dict(first.registry) == {"model_package_group": "credit", "account": "123456789012", "region": REGION}
    assert first.artifact_uri == "s3://models/credit/model.tar.gz" and first.tags["team"] == "risk"
    assert events["2"].delivery_id == "eb-1"  # stored once, from the webhook

    # version 1 approved while nobody polled; every group when none is listed: "other" was not
    # polled before, so what it holds is a baseline of its own (recorded, not deployed)
    sm.update_model_package(ModelPackageArn=arns[0], ModelApprovalStatus="Approved")
    code, counts, err = poll(capsys, state)
    assert code == 0, err
    assert (counts["seen"], counts["new"], counts["baseline"], counts["duplicate"]) == (4, 1, 1, 2)
    approved = sorted((e.event.model, e.event.version, e.status) for e in Inbox(state).list()
                      if e.event.kind == "model_version.approved")
    assert approved == [("credit", "1", "pending"), ("credit", "2", "pending"), ("other", "1", "ignored")]


def _as_account(monkeypatch, account: str):
    """Credentials of a role in ``account`` (moto keeps each account's registry apart) in the
    environment, as a poller in that account has them; a SageMaker client with them. boto3's
    default session (it keeps the credentials it found first) is made again, as in a new process."""
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    role = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/poller", RoleSessionName="poller")["Credentials"]
    for name, key in (("AWS_ACCESS_KEY_ID", "AccessKeyId"), ("AWS_SECRET_ACCESS_KEY", "SecretAccessKey"),
                      ("AWS_SESSION_TOKEN", "SessionToken")):
        monkeypatch.setenv(name, role[key])
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    return boto3.client("sagemaker", region_name=REGION)


def test_two_accounts_in_one_region_have_a_baseline_each(sagemaker, tmp_path, capsys, monkeypatch):
    """Two AWS accounts with a group of the same name, polled in one region into one inbox: the
    second account's first poll is a baseline of its own, not a deployment of all it holds."""
    state = tmp_path / "state"
    for account in ("111111111111", "222222222222"):
        sm = _as_account(monkeypatch, account)
        sm.create_model_package_group(ModelPackageGroupName="credit")
        package(sm, "credit", "Approved")
        package(sm, "credit", "PendingManualApproval")
        code, counts, err = poll(capsys, state, "--option", "model_package_groups=[credit]")
        assert code == 0, err
        assert (counts["seen"], counts["new"], counts["baseline"]) == (2, 0, 2), account
    sm = _as_account(monkeypatch, "111111111111")
    package(sm, "credit", "Approved")
    code, counts, err = poll(capsys, state, "--option", "model_package_groups=[credit]")
    assert code == 0, err
    assert (counts["seen"], counts["new"], counts["baseline"], counts["duplicate"]) == (3, 1, 0, 2)
    new = [(dict(e.event.registry)["account"], e.event.version) for e in Inbox(state).list() if e.status == "pending"]
    assert new == [("111111111111", "3")]


def test_a_poll_state_kept_under_the_region_alone_is_taken_over(sagemaker, tmp_path, capsys, monkeypatch):
    """An older release kept the poll state under "SageMaker in <region>": the first poll after
    the upgrade continues it (no second baseline) under the account's key."""
    from pipeline_plugin.inbox.poll_state import state_for
    from pipeline_plugin.poll.sagemaker import SageMakerPoller

    sm = sagemaker
    sm.create_model_package_group(ModelPackageGroupName="credit")
    package(sm, "credit", "Approved")
    state = tmp_path / "state"
    with monkeypatch.context() as older:
        older.setattr(SageMakerPoller, "identity", SageMakerPoller.describe)
        code, counts, err = poll(capsys, state, "--option", f"region={REGION}")
        assert code == 0 and counts["baseline"] == 1, err
    package(sm, "credit", "Approved")
    code, counts, err = poll(capsys, state, "--option", f"region={REGION}")
    assert code == 0, err
    assert (counts["seen"], counts["new"], counts["baseline"], counts["duplicate"]) == (2, 1, 0, 1)
    poll_state = state_for(Inbox(state))
    assert poll_state.get("sagemaker", f"SageMaker in {REGION}") is None
    assert poll_state.get("sagemaker", f"SageMaker account 123456789012 in {REGION}") is not None
