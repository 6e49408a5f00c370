"""The azure-devops provider drives the azure-devops SDK against a server that checks every request
against Azure DevOps' own REST descriptions (pipelines 7.1 and release 7.1) and answers as the
service does. The SDK's route discovery (OPTIONS _apis, ResourceAreas) is served separately: it is
not part of the trimmed descriptions."""

from __future__ import annotations

import base64
import json

import pytest

from pipeline_plugin.errors import ConfigError, PayloadError, ServiceError
from pipeline_plugin.providers import get_provider

from .helpers import TOKEN, Contract, Reply, make_run

ORG, PROJECT = "contoso", "ml-platform"
RUN = "Runs_Run Pipeline"
RELEASE = "Releases_Create"
LOCATIONS = [
    {"id": "7859261e-d2e9-4a68-b820-a5d84cc5bb3d", "area": "pipelines", "resourceName": "runs",
     "routeTemplate": "{project}/_apis/pipelines/{pipelineId}/runs/{runId}"},
    {"id": "a166fde7-27ad-408e-ba75-703c2cc9d500", "area": "Release", "resourceName": "releases",
     "routeTemplate": "{project}/_apis/release/{resource}/{releaseId}"},
    {"id": "e81700f7-3be2-46de-8624-2eb35882fcaa", "area": "Location", "resourceName": "ResourceAreas",
     "routeTemplate": "_apis/{resource}/{areaId}"},
]


def _auth(req):
    expected = "Basic " + base64.b64encode(f":{TOKEN}".encode()).decode()
    return req.header("Authorization") in (expected, f"Bearer {TOKEN}")


def azure(serve, monkeypatch):
    unauthorized = Reply(401, "Access Denied: The Personal Access Token used has expired.")
    server = serve([Contract("azure-devops-pipelines.json"), Contract("azure-devops-release.json")],
                   auth=_auth, unauthorized=unauthorized)
    org_url = f"{server.url}/{ORG}/"

    def discovery(req):
        if not _auth(req):
            return unauthorized
        return Reply(200, {"count": len(LOCATIONS), "value": [
            {**loc, "resourceVersion": 1, "minVersion": "1.0", "maxVersion": "7.1", "releasedVersion": "7.1"}
            for loc in LOCATIONS]})

    server.extra("OPTIONS", rf"^/{ORG}/_apis$", discovery)
    server.extra("GET", rf"^/{ORG}/_apis/ResourceAreas$", lambda req: Reply(200, {"count": 1, "value": [
        {"id": "efc2f575-36ef-48e9-b672-0c6fb4a48ac5", "name": "Release", "locationUrl": org_url}]}))
    server.on(RUN, lambda req: Reply(200, {
        "id": 311, "name": "20260101.1", "state": "inProgress", "url": f"{org_url}{PROJECT}/_apis/pipelines/5/runs/311",
        "_links": {"web": {"href": f"https://dev.azure.com/{ORG}/{PROJECT}/_build/results?buildId=311"}},
        "pipeline": {"id": int(req.params["pipelineId"]), "name": "deploy-model"},
        "templateParameters": req.body.get("templateParameters")}))
    server.on(RELEASE, lambda req: Reply(200, {
        "id": 58, "name": "Release-58", "status": "active",
        "_links": {"web": {"href": f"https://dev.azure.com/{ORG}/{PROJECT}/_release?releaseId=58"}},
        "variables": req.body.get("variables")}))
    monkeypatch.setenv("SYSTEM_COLLECTIONURI", org_url)
    monkeypatch.setenv("AZURE_DEVOPS_EXT_PAT", TOKEN)
    return server


def test_run_pipeline_passes_the_event_as_template_parameters(serve, monkeypatch):
    server = azure(serve, monkeypatch)
    result = get_provider("azure-devops").dispatch(
        make_run({"project": PROJECT, "pipeline_id": 5, "ref": "main", "parameters": {"target": "docker"}}))
    [call] = server.calls(RUN)
    assert call.params == {"organization": ORG, "project": PROJECT, "pipelineId": "5"}
    assert "api-version=7.1" in call.header("Accept")
    params = call.body["templateParameters"]
    assert params["model"] == "iris" and params["version"] == "7" and params["eventId"] == "0123456789abcdef0123456789abcdef"
    assert json.loads(params["tags"]) == {"stage": "candidate"} and params["target"] == "docker"
    assert call.body["resources"] == {"repositories": {"self": {"refName": "refs/heads/main"}}}
    assert result.external_id == "311"
    assert result.url == f"https://dev.azure.com/{ORG}/{PROJECT}/_build/results?buildId=311"


def test_create_release_sets_model_name_and_version_as_release_variables(serve, monkeypatch):
    server = azure(serve, monkeypatch)
    result = get_provider("azure-devops").dispatch(make_run({"project": PROJECT, "release_definition_id": "12"}))
    [call] = server.calls(RELEASE)
    assert call.body["definitionId"] == 12
    variables = {k: v["value"] for k, v in call.body["variables"].items()}
    assert variables["MODEL_NAME"] == "iris" and variables["MODEL_VERSION"] == "7"
    assert "artifacts" not in call.body  # no artifact named: the definition's default version
    assert result.external_id == "58" and "releaseId=58" in result.url


def test_release_artifact_is_the_build_a_model_version_tag_names(serve, monkeypatch):
    """A Build artifact's instanceReference.id is a build id (Releases - Create), not the model version:
    the rule says which tag of the model version holds it."""
    server = azure(serve, monkeypatch)
    get_provider("azure-devops").dispatch(make_run(
        {"project": PROJECT, "release_definition_id": 12, "artifact_alias": "_iris-training",
         "artifact_version": "tag:build_id"}, tags={"build_id": "1187", "stage": "candidate"}))
    [call] = server.calls(RELEASE)
    assert call.body["artifacts"] == [{"alias": "_iris-training", "instanceReference": {"id": "1187"}}]
    assert {k: v["value"] for k, v in call.body["variables"].items()}["MODEL_VERSION"] == "7"


def test_release_artifact_versioned_like_the_model(serve, monkeypatch):
    server = azure(serve, monkeypatch)
    get_provider("azure-devops").dispatch(make_run(
        {"project": PROJECT, "release_definition_id": 12, "artifact_alias": "iris-model", "artifact_version": "model-version"}))
    [call] = server.calls(RELEASE)
    assert call.body["artifacts"] == [{"alias": "iris-model", "instanceReference": {"id": "7", "name": "7"}}]


@pytest.mark.parametrize("pipeline,tags,error,expect", [
    ({"artifact_alias": "_b"}, {}, ConfigError, "pipeline.artifact_version is not set"),
    ({"artifact_version": "model-version"}, {}, ConfigError, "pipeline.artifact_alias is not"),
    ({"artifact_alias": "_b", "artifact_version": "build"}, {}, ConfigError, "model-version, tag:KEY"),
    ({"artifact_alias": "_b", "artifact_version": "tag:build_id"}, {"stage": "x"}, PayloadError, "no tag 'build_id'"),
])
def test_release_artifact_settings_fail_before_any_request(serve, monkeypatch, pipeline, tags, error, expect):
    server = azure(serve, monkeypatch)
    with pytest.raises(error, match=expect):
        get_provider("azure-devops").dispatch(
            make_run({"project": PROJECT, "release_definition_id": 12, **pipeline}, tags=tags))
    assert server.requests == []


def test_system_accesstoken_is_sent_as_bearer(serve, monkeypatch):
    server = azure(serve, monkeypatch)
    monkeypatch.delenv("AZURE_DEVOPS_EXT_PAT")
    monkeypatch.setenv("SYSTEM_ACCESSTOKEN", TOKEN)
    get_provider("azure-devops").dispatch(make_run({"project": PROJECT, "pipeline_id": 5}))
    assert server.calls(RUN)[0].header("Authorization") == f"Bearer {TOKEN}"


def test_expired_token_fails_at_once_naming_the_variable(serve, monkeypatch):
    server = azure(serve, monkeypatch)
    monkeypatch.setenv("AZURE_DEVOPS_EXT_PAT", "expired")
    server.then(RUN, Reply(401, "Access Denied"))
    with pytest.raises(ConfigError, match="AZURE_DEVOPS_EXT_PAT") as info:
        get_provider("azure-devops").dispatch(make_run({"project": PROJECT, "pipeline_id": 6}))
    assert "expired" not in info.value.message.replace("has expired", "")


@pytest.mark.parametrize("status,expect", [(404, "pipeline.pipeline_id"), (400, "declare the parameters")])
def test_client_errors_fail_at_once(serve, monkeypatch, status, expect):
    server = azure(serve, monkeypatch)
    server.then(RUN, Reply(status, {"$id": "1", "message": "Unexpected parameter 'kind'",
                                    "typeName": "Microsoft.Azure.Pipelines.WebApi.PipelineValidationException",
                                    "typeKey": "PipelineValidationException", "errorCode": 0, "eventId": 3000}))
    with pytest.raises(ConfigError, match=expect):
        get_provider("azure-devops").dispatch(make_run({"project": PROJECT, "pipeline_id": 5}))
    assert len(server.calls(RUN)) == 1


def test_429_and_503_are_retried(serve, monkeypatch):
    server = azure(serve, monkeypatch)
    server.then(RUN, Reply(429, {"message": "TF400733: request throttled"}, {"Retry-After": "1"}),
                Reply(503, "Service Unavailable"))
    assert get_provider("azure-devops").dispatch(make_run({"project": PROJECT, "pipeline_id": 5})).external_id == "311"
    assert len(server.calls(RUN)) == 3


def test_a_run_that_timed_out_is_not_sent_again(serve, monkeypatch):
    server = azure(serve, monkeypatch)
    monkeypatch.setenv("PIPELINE_PLUGIN_HTTP_TIMEOUT", "0.3")
    server.on(RUN, Reply(200, {}, delay=1))
    with pytest.raises(ServiceError, match="may have started the run"):
        get_provider("azure-devops").dispatch(make_run({"project": PROJECT, "pipeline_id": 5}))
    assert len(server.calls(RUN)) == 1


@pytest.mark.parametrize(
    "pipeline,expect",
    [({"project": PROJECT}, "exactly one of"), ({"project": PROJECT, "pipeline_id": 1, "release_definition_id": 2}, "exactly one of"),
     ({"project": PROJECT, "pipeline_id": "five"}, "pipeline.pipeline_id"), ({"pipeline_id": 5}, "pipeline.project")],
)
def test_bad_rule_targets(pipeline, expect, monkeypatch):
    monkeypatch.setenv("SYSTEM_COLLECTIONURI", "http://127.0.0.1:9/x/")
    with pytest.raises(ConfigError, match=expect):
        get_provider("azure-devops").dispatch(make_run(pipeline))


def test_missing_settings_are_named(monkeypatch):
    monkeypatch.delenv("SYSTEM_COLLECTIONURI", raising=False)
    with pytest.raises(ConfigError, match="SYSTEM_COLLECTIONURI"):
        get_provider("azure-devops").dispatch(make_run({"project": PROJECT, "pipeline_id": 5}))
    monkeypatch.setenv("SYSTEM_COLLECTIONURI", "https://dev.azure.com/x/")
    with pytest.raises(ConfigError, match="AZURE_DEVOPS_EXT_PAT"):
        get_provider("azure-devops").dispatch(make_run({"project": PROJECT, "pipeline_id": 5}))


def test_hostile_tags_never_reach_azure(serve, monkeypatch):
    server = azure(serve, monkeypatch)
    with pytest.raises(PayloadError, match="tags.note"):
        get_provider("azure-devops").dispatch(make_run({"project": PROJECT, "pipeline_id": 5}, tags={"note": "$(System.AccessToken)"}))
    assert server.requests == []
