"""The contract server itself: it must catch requests that break the API descriptions, or the
provider tests prove nothing."""

from __future__ import annotations

import httpx
import pytest

from .helpers import Contract, ContractServer, Reply


@pytest.fixture
def server():
    with ContractServer([Contract("github.json"), Contract("gitlab.json"), Contract("azure-devops-pipelines.json"),
                         Contract("azure-devops-release.json")]) as s:
        for op in ("actions/create-workflow-dispatch", "repos/create-dispatch-event",
                   "postApiV4ProjectsId(refRef)triggerPipeline", "Runs_Run Pipeline", "Releases_Get Release"):
            s.on(op, Reply(200, {}))
        yield s


def test_unknown_route_is_a_violation(server):
    assert httpx.post(f"{server.url}/repos/a/b/actions/workflows/x/dispatch", json={"ref": "m"}).status_code == 404
    assert httpx.delete(f"{server.url}/repos/a/b/dispatches").status_code == 404
    assert len(server.violations) == 2 and "unexpected request" in server.violations[0]


@pytest.mark.parametrize("body,problem", [
    ({"inputs": {}}, "'ref' is a required property"),
    ({"ref": 3}, "3 is not of type 'string'"),
    ({"ref": "m", "inputs": {f"i{n}": "x" for n in range(26)}}, "too many properties"),
])
def test_request_bodies_are_validated(server, body, problem):
    assert httpx.post(f"{server.url}/repos/a/b/actions/workflows/x.yml/dispatches", json=body).status_code == 400
    assert problem in server.violations[0]


def test_refs_resolve_inside_the_description(server):
    # RunPipelineParameters.variables -> #/definitions/Variable.isSecret is a boolean
    url = f"{server.url}/org/proj/_apis/pipelines/5/runs?api-version=7.1"
    assert httpx.post(url, json={"variables": {"X": {"isSecret": "no", "value": "1"}}}).status_code == 400
    assert server.violations == ["Runs_Run Pipeline: request body at variables/X/isSecret: 'no' is not of type 'boolean'"]


def test_gitlab_combined_trigger_route_means_both_forms(server):
    for path in ("/api/v4/projects/g%2Fp/trigger/pipeline", "/api/v4/projects/7/ref/main/trigger/pipeline"):
        assert httpx.post(server.url + path, json={"token": "t", "ref": "main"}).status_code == 200
    assert httpx.post(server.url + "/api/v4/projects/7/trigger/pipeline", json={"ref": "main"}).status_code == 400
    assert server.violations == ["postApiV4ProjectsId(refRef)triggerPipeline: request body at (root): 'token' is a required property"]


def test_azure_api_version_and_integer_path_params(server):
    url = f"{server.url}/org/proj/_apis/pipelines/5/runs"
    assert httpx.post(url, json={}, headers={"Accept": "application/json;api-version=7.1"}).status_code == 200
    assert httpx.post(url + "?api-version=7.1", json={}).status_code == 200
    assert httpx.post(url, json={}).status_code == 400
    assert httpx.post(f"{server.url}/org/proj/_apis/pipelines/five/runs?api-version=7.1", json={}).status_code == 400
    assert httpx.get(f"{server.url}/org/proj/_apis/release/releases/12?api-version=7.1").status_code == 200  # x-ms-paths
    assert server.violations == [
        "Runs_Run Pipeline: required query parameter 'api-version' missing",
        "Runs_Run Pipeline: path parameter 'pipelineId'='five' is not an integer",
    ]
