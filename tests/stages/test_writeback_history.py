"""Registry write-back against a real MLflow server, and the deployment history store."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from pipeline_plugin import writeback
from pipeline_plugin.errors import ConfigError, NotFoundError, ServiceError
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.history import History, Record
from tests.services import mlflow_server


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as server:
        yield server.url


def test_mlflow_aliases_and_tags_follow_production_and_rollback(mlflow_url):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_url, registry_uri=mlflow_url)
    client.create_registered_model("churn-wb")
    for i in range(2):
        client.create_model_version("churn-wb", source=f"s3://models/churn/{i}")
    info = writeback.WritebackInfo(source="mlflow", registry={"tracking_uri": mlflow_url},
                                   scoring_uri="http://127.0.0.1:8890/score", run_url="http://ci/run/7", image="sha256:aa")

    writeback.write("production", info, model="churn-wb", version="1", previous_version=None)
    assert client.get_model_version_by_alias("churn-wb", "production").version == "1"
    tags = client.get_model_version("churn-wb", "1").tags
    assert tags["pipeline_plugin.status"] == "production"
    assert tags["pipeline_plugin.scoring_uri"] == "http://127.0.0.1:8890/score"
    assert tags["pipeline_plugin.run_url"] == "http://ci/run/7"

    written = writeback.write("production", info, model="churn-wb", version="2", previous_version="1")
    assert written["aliases"] == {"production": "2", "previous-production": "1"}
    assert client.get_model_version_by_alias("churn-wb", "production").version == "2"
    assert client.get_model_version_by_alias("churn-wb", "previous-production").version == "1"
    assert client.get_model_version("churn-wb", "1").tags["pipeline_plugin.status"] == "previous-production"

    info.reason = "production check failed"
    writeback.write("rollback", info, model="churn-wb", restored_version="1", from_version="2", before_restored=None)
    assert client.get_model_version_by_alias("churn-wb", "production").version == "1"
    assert "previous-production" not in client.get_registered_model("churn-wb").aliases
    v2 = client.get_model_version("churn-wb", "2").tags
    assert v2["pipeline_plugin.status"] == "rolled-back" and v2["pipeline_plugin.reason"] == "production check failed"
    # every tag written is one the listener recognises as its own echo
    echo = ModelVersionEvent(source="mlflow", kind="tag.set", model="churn-wb", version="2", delivery_id="d1",
                             tags={k: v for k, v in v2.items() if k.startswith("pipeline_plugin.")})
    assert writeback.is_own_writeback(echo)
    # the aliases it moves are its own; any other alias a person sets is theirs, and may start rules
    for alias, own in (("production", True), ("previous-production", True), ("staging", False), ("champion", False)):
        moved = ModelVersionEvent(source="mlflow", kind="alias.set", model="churn-wb", version="2", alias=alias,
                                  delivery_id=f"a-{alias}")
        assert writeback.is_own_writeback(moved) is own, alias


def test_mlflow_writeback_errors_are_named(mlflow_url, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = writeback.write("status", writeback.WritebackInfo(source="mlflow"), model="m", version="1", status="x")
    assert "tracking_uri" in out["skipped"]
    with pytest.raises(ServiceError, match="no-such-model"):
        writeback.write("status", writeback.WritebackInfo(source="mlflow", registry={"tracking_uri": mlflow_url}),
                        model="no-such-model", version="1", status="x")


def test_registries_without_writeback_are_skipped_with_a_reason(monkeypatch):
    for source in ("huggingface", "docker-registry", "cloudevents"):
        out = writeback.write("production", writeback.WritebackInfo(source=source), model="m", version="1",
                              previous_version=None)
        assert "skipped" in out and out["skipped"]
    # a registry with a write-back, but an event that does not say where: named, with the fix
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for source, says in (("azureml", "subscription, resource_group, workspace"), ("sagemaker", "AWS_REGION")):
        with pytest.raises(ConfigError, match=says):
            writeback.write("production", writeback.WritebackInfo(source=source), model="m", version="1",
                            previous_version=None)
    assert writeback.parse_registry("tracking_uri=http://x:5000;host=h") == {"tracking_uri": "http://x:5000", "host": "h"}


def test_history_records_serving_and_approvals(tmp_path):
    h = History(tmp_path)
    h.record(Record(service="s", env="production", action="promote", status="succeeded", version="1", image_id="sha256:1"))
    h.record(Record(service="s", env="production", action="promote", status="failed", version="2", image_id="sha256:2"))
    h.record(Record(service="s", env="staging", action="smoke-test", status="passed", image_id="sha256:2",
                    details={"sample": [[1]]}))
    again = History(tmp_path)  # another process sees the same store
    assert again.serving("s", "production").version == "1"
    assert again.passed_smoke_test("s", "staging", "sha256:2").details == {"sample": [[1]]}
    assert again.passed_smoke_test("s", "staging", "sha256:1") is None
    assert again.environments("s") == ["production", "staging"]
    with pytest.raises(ValueError):
        again.record(Record(service="s", env="e", action="nonsense", status="x"))
    a = again.request_approval("r1", "s", {"from_env": "staging"})
    assert a.status == "pending" and again.request_approval("r1", "s", {"other": 1}).request == {"from_env": "staging"}
    assert again.decide("r1", "approved", "alice").decided_by == "alice"
    assert again.decide("r1", "rejected", "bob").status == "approved"  # the first decision stands
    with pytest.raises(NotFoundError, match="no promotion waits"):
        again.approval("r2")


def test_sagemaker_metadata_follows_production_and_rollback(tmp_path, monkeypatch):
    """boto3 against a local SageMaker API: the model package versions' CustomerMetadataProperties
    say what serves production, what it replaced and what was rolled back; approval is untouched."""
    import boto3

    from tests.services import sagemaker_api

    with sagemaker_api(tmp_path) as api:
        for name, value in (("AWS_ENDPOINT_URL_SAGEMAKER", api.url), ("AWS_ACCESS_KEY_ID", "testing"),
                            ("AWS_SECRET_ACCESS_KEY", "testing")):
            monkeypatch.setenv(name, value)
        sm = boto3.client("sagemaker", region_name="eu-west-1")
        sm.create_model_package_group(ModelPackageGroupName="credit-risk")
        spec = {"Containers": [{"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/credit:1"}],
                "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]}
        arns = [sm.create_model_package(ModelPackageGroupName="credit-risk", ModelApprovalStatus="Approved",
                                        InferenceSpecification=spec)["ModelPackageArn"] for _ in range(2)]
        account = arns[0].split(":")[4]
        info = writeback.WritebackInfo(source="sagemaker",
                                       registry={"model_package_group": "credit-risk", "account": account,
                                                 "region": "eu-west-1"},
                                       scoring_uri="http://127.0.0.1:8891/score", run_url="http://ci/run/9",
                                       image="sha256:bb")

        def props(version):
            return sm.describe_model_package(ModelPackageName=arns[version - 1]).get("CustomerMetadataProperties", {})

        writeback.write("production", info, model="credit-risk", version="1", previous_version=None)
        assert props(1)["pipeline_plugin.status"] == "production"
        assert props(1)["pipeline_plugin.scoring_uri"] == "http://127.0.0.1:8891/score"
        writeback.write("production", info, model="credit-risk", version="2", previous_version="1")
        assert props(2)["pipeline_plugin.status"] == "production" and props(2)["pipeline_plugin.run_url"] == "http://ci/run/9"
        assert props(1)["pipeline_plugin.status"] == "previous-production"

        info.reason = "production check failed: " + "x" * 400
        out = writeback.write("rollback", info, model="credit-risk", restored_version="1", from_version="2",
                              before_restored=None)
        assert props(1)["pipeline_plugin.status"] == "production"
        assert props(2)["pipeline_plugin.status"] == "rolled-back"
        assert props(2)["pipeline_plugin.reason"].startswith("production check failed") and len(props(2)["pipeline_plugin.reason"]) == 256
        assert set(out["properties"]) == {"1", "2"}
        # a version the registry does not have is a named service error
        with pytest.raises(ServiceError, match="credit-risk/7"):
            writeback.write("status", info, model="credit-risk", version="7", status="failed-staging")


ARM_VERSION = (r"/subscriptions/sub-1/resourceGroups/rg-ml/providers/Microsoft\.MachineLearningServices"
               r"/workspaces/ws-prod/models/([^/]+)/versions/([^/]+)$")


@contextmanager
def arm_workspace(token: str):
    """An Azure Resource Manager endpoint for one Azure ML workspace's model versions on loopback
    (tests/contract_server.py, routes of its own: ARM has no description in ../shared/contracts):
    GET and PUT .../workspaces/ws-prod/models/{name}/versions/{version}?api-version=..., bearer
    token required, ARM's error shape for unknown versions. Yields (server, versions), versions
    keyed by (name, version)."""
    import re

    from contract_server import ContractServer, Reply

    versions: dict[tuple[str, str], dict] = {}
    server = ContractServer([])

    def handle(req):
        if req.header("Authorization") != f"Bearer {token}":
            return Reply(401, {"error": {"code": "AuthenticationFailed", "message": "bad token"}})
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", (req.query.get("api-version") or [""])[0]):
            return Reply(400, {"error": {"code": "MissingApiVersionParameter", "message": "api-version"}})
        key = re.search(ARM_VERSION, req.path).groups()
        if key not in versions:
            return Reply(404, {"error": {"code": "UserError", "message": "Not found"}})
        if req.method == "PUT":
            assert all(isinstance(v, str) for v in req.body["properties"]["tags"].values())
            versions[key] = {**versions[key], "properties": req.body["properties"]}
        return Reply(200, versions[key])

    for method in ("GET", "PUT"):
        server.extra(method, ARM_VERSION, handle)
    with server:
        yield server, versions


def model_version(name: str, version: str) -> dict:
    return {"id": f"/.../models/{name}/versions/{version}", "name": version,
            "properties": {"modelUri": f"azureml://jobs/j{version}/outputs/model", "modelType": "mlflow_model",
                           "tags": {"team": "risk"}}}


def test_azureml_tags_follow_production_and_rollback(monkeypatch):
    with arm_workspace("arm-token-1") as (server, versions):
        versions.update({("credit-risk", v): model_version("credit-risk", v) for v in ("3", "4")})
        monkeypatch.setenv("AZURE_RESOURCE_MANAGER_URL", server.url)
        monkeypatch.setenv("AZURE_ACCESS_TOKEN", "arm-token-1")
        info = writeback.WritebackInfo(source="azureml",
                                       registry={"subscription": "sub-1", "resource_group": "rg-ml", "workspace": "ws-prod"},
                                       scoring_uri="http://127.0.0.1:8891/score", run_url="http://ci/run/11")

        def tags(version):
            return versions[("credit-risk", version)]["properties"]["tags"]

        writeback.write("production", info, model="credit-risk", version="3", previous_version=None)
        writeback.write("production", info, model="credit-risk", version="4", previous_version="3")
        assert tags("4")["pipeline_plugin.status"] == "production" and tags("4")["team"] == "risk"  # others kept
        assert tags("4")["pipeline_plugin.scoring_uri"] == "http://127.0.0.1:8891/score"
        assert tags("3")["pipeline_plugin.status"] == "previous-production"
        assert versions[("credit-risk", "4")]["properties"]["modelUri"] == "azureml://jobs/j4/outputs/model"
        info.reason = "production check failed"
        writeback.write("rollback", info, model="credit-risk", restored_version="3", from_version="4", before_restored=None)
        assert tags("3")["pipeline_plugin.status"] == "production" and tags("4")["pipeline_plugin.status"] == "rolled-back"
        assert {r.method for r in server.requests} == {"GET", "PUT"} and all("api-version" in r.query for r in server.requests)

        with pytest.raises(ServiceError, match="404.*no such model version"):
            writeback.write("status", info, model="credit-risk", version="9", status="failed-staging")
        monkeypatch.setenv("AZURE_ACCESS_TOKEN", "expired")
        with pytest.raises(ServiceError, match="401.*renew AZURE_ACCESS_TOKEN") as err:
            writeback.write("status", info, model="credit-risk", version="3", status="production")
        assert "expired" not in str(err.value)  # the token is never echoed
