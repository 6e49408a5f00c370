"""The gitlab provider drives python-gitlab against a server that checks every request against
GitLab's own API description (tests/providers/contracts/gitlab.json) and answers as GitLab does."""

from __future__ import annotations

import pytest

from pipeline_plugin.errors import ConfigError, PayloadError, ServiceError
from pipeline_plugin.providers import get_provider

from .helpers import TOKEN, Contract, Reply, make_run

TRIGGER = "trig-3c1d"
CREATE = "postApiV4ProjectsIdPipeline"
TRIGGER_OP = "postApiV4ProjectsId(refRef)triggerPipeline"


def _auth(req):
    if req.operation == TRIGGER_OP:
        return isinstance(req.body, dict) and req.body.get("token") == TRIGGER
    return req.header("PRIVATE-TOKEN") == TOKEN


def gitlab(serve, monkeypatch):
    server = serve([Contract("gitlab.json")], auth=_auth, unauthorized=Reply(401, {"message": "401 Unauthorized"}))

    def pipeline(req):
        return Reply(201, {"id": 4711, "iid": 12, "project_id": 42, "status": "created", "source": "api",
                           "ref": req.body["ref"], "sha": "a" * 40,
                           "web_url": f"{server.url}/ml/models/-/pipelines/4711"})

    server.on(CREATE, pipeline)
    server.on(TRIGGER_OP, pipeline)
    server.on("getApiV4ProjectsId", Reply(200, {"id": 42, "path_with_namespace": "ml/models", "default_branch": "develop",
                                                 "web_url": f"{server.url}/ml/models"}))
    monkeypatch.setenv("CI_SERVER_URL", server.url)
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    return server


PIPELINE = {"provider": "gitlab", "project": "ml/models", "ref": "main"}


def test_pipelines_create_sends_event_as_variables(serve, monkeypatch):
    server = gitlab(serve, monkeypatch)
    result = get_provider("gitlab").dispatch(make_run({**PIPELINE, "variables": {"DEPLOY_TARGET": "docker"}}))
    [call] = server.calls(CREATE)
    assert call.params["id"] == "ml/models"  # sent URL-encoded as ml%2Fmodels
    assert "%2F" in call.path
    assert call.body["ref"] == "main"
    variables = {v["key"]: v["value"] for v in call.body["variables"]}
    assert variables["MODEL_NAME"] == "iris" and variables["MODEL_VERSION"] == "7"
    assert variables["EVENT_ID"] == "0123456789abcdef0123456789abcdef"
    assert variables["DEPLOY_TARGET"] == "docker" and variables["MODEL_TAGS"] == '{"stage":"candidate"}'
    assert result.external_id == "4711" and result.url == f"{server.url}/ml/models/-/pipelines/4711"


def test_ref_defaults_to_the_default_branch(serve, monkeypatch):
    server = gitlab(serve, monkeypatch)
    get_provider("gitlab").dispatch(make_run({"project": "42"}))
    assert server.calls(CREATE)[0].body["ref"] == "develop"


def test_trigger_token_uses_the_trigger_api(serve, monkeypatch):
    server = gitlab(serve, monkeypatch)
    monkeypatch.delenv("GITLAB_TOKEN")
    monkeypatch.setenv("MODELS_TRIGGER_TOKEN", TRIGGER)
    result = get_provider("gitlab").dispatch(make_run({**PIPELINE, "trigger_token_env": "MODELS_TRIGGER_TOKEN"}))
    [call] = server.calls(TRIGGER_OP)
    assert call.body["ref"] == "main" and call.body["variables"]["MODEL_NAME"] == "iris"
    assert server.calls(CREATE) == [] and result.detail.endswith("(trigger token)")


def test_missing_trigger_token_variable_is_named(monkeypatch):
    with pytest.raises(ConfigError, match="NOPE_TOKEN"):
        get_provider("gitlab").dispatch(make_run({**PIPELINE, "trigger_token_env": "NOPE_TOKEN"}))


def test_bad_token_fails_at_once(serve, monkeypatch):
    server = gitlab(serve, monkeypatch)
    monkeypatch.setenv("GITLAB_TOKEN", "wrong")
    with pytest.raises(ConfigError, match="Set GITLAB_TOKEN"):
        get_provider("gitlab").dispatch(make_run(PIPELINE))
    assert len(server.calls(CREATE)) == 1


@pytest.mark.parametrize("status,expect", [(404, "pipeline.project"), (400, "pipeline.ref"), (403, "Developer role")])
def test_client_errors_fail_at_once(serve, monkeypatch, status, expect):
    server = gitlab(serve, monkeypatch)
    server.then(CREATE, Reply(status, {"message": {"base": ["Reference not found"]} if status == 400 else f"{status}"}))
    with pytest.raises(ConfigError, match=expect):
        get_provider("gitlab").dispatch(make_run(PIPELINE))
    assert len(server.calls(CREATE)) == 1


def test_429_with_retry_after_and_500_are_retried(serve, monkeypatch):
    server = gitlab(serve, monkeypatch)
    server.then(CREATE, Reply(429, {"message": "Retry later"}, {"Retry-After": "1"}), Reply(500, {"message": "500"}))
    result = get_provider("gitlab").dispatch(make_run(PIPELINE))
    assert result.external_id == "4711" and len(server.calls(CREATE)) == 3


def test_a_create_that_timed_out_is_not_sent_again(serve, monkeypatch):
    server = gitlab(serve, monkeypatch)
    monkeypatch.setenv("PIPELINE_PLUGIN_HTTP_TIMEOUT", "0.3")
    server.on(CREATE, Reply(201, {}, delay=1))
    with pytest.raises(ServiceError, match="create a pipeline .* may have started the run"):
        get_provider("gitlab").dispatch(make_run(PIPELINE))
    assert len(server.calls(CREATE)) == 1


@pytest.mark.parametrize("project", ["", "no-namespace", "../x", "a/b c"])
def test_bad_project_is_a_config_error(project):
    with pytest.raises(ConfigError, match="pipeline.project"):
        get_provider("gitlab").dispatch(make_run({"project": project}))


def test_hostile_version_never_reaches_gitlab(serve, monkeypatch):
    server = gitlab(serve, monkeypatch)
    with pytest.raises(PayloadError, match="version"):
        get_provider("gitlab").dispatch(make_run(PIPELINE, version="$(curl evil)"))
    assert server.requests == []
