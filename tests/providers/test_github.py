"""The github provider drives PyGithub against a server that checks every request against GitHub's
own REST description (tests/providers/contracts/github.json) and answers as GitHub does."""

from __future__ import annotations

import json
import time

import pytest

from pipeline_plugin.errors import ConfigError, PayloadError, ServiceError
from pipeline_plugin.providers import get_provider

from .helpers import TOKEN, Contract, Reply, make_run

OWNER, REPO, WF_ID = "acme", "models", 161335
DISPATCH = "actions/create-workflow-dispatch"


def github(serve, monkeypatch, prefix: str = ""):
    server = serve([Contract("github.json", prefix=prefix)],
                   auth=lambda r: r.header("Authorization") in (f"token {TOKEN}", f"Bearer {TOKEN}"))
    api = server.url + prefix
    web = server.url if prefix else "https://github.com"
    server.on("repos/get", lambda req: Reply(200, {
        "id": 1, "name": REPO, "full_name": f"{OWNER}/{REPO}", "default_branch": "trunk",
        "url": f"{api}/repos/{OWNER}/{REPO}", "html_url": f"{web}/{OWNER}/{REPO}"}))
    server.on("actions/get-workflow", lambda req: Reply(200, {
        "id": WF_ID, "node_id": "W_1", "name": "Deploy model", "path": ".github/workflows/deploy-model.yml",
        "state": "active", "url": f"{api}/repos/{OWNER}/{REPO}/actions/workflows/{WF_ID}",
        "html_url": f"https://github.com/{OWNER}/{REPO}/actions/workflows/deploy-model.yml",
        "badge_url": "", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}))
    server.on(DISPATCH, lambda req: Reply(200, {
        "workflow_run_id": 9001, "run_url": f"{api}/repos/{OWNER}/{REPO}/actions/runs/9001",
        "html_url": f"https://github.com/{OWNER}/{REPO}/actions/runs/9001"})
        if req.body.get("return_run_details") else Reply(204))
    server.on("repos/create-dispatch-event", Reply(204))
    monkeypatch.setenv("GITHUB_API_URL", api)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    if not prefix:
        monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    return server


PIPELINE = {"provider": "github", "repository": f"{OWNER}/{REPO}", "workflow": "deploy-model.yml", "ref": "main"}


def test_workflow_dispatch_sends_event_as_inputs_and_returns_the_run(serve, monkeypatch):
    server = github(serve, monkeypatch)
    result = get_provider("github").dispatch(make_run(PIPELINE))
    assert result.status == "dispatched"
    assert result.url == f"https://github.com/{OWNER}/{REPO}/actions/runs/9001"
    assert result.external_id == "9001"
    [call] = server.calls(DISPATCH)
    assert call.body["ref"] == "main" and call.body["return_run_details"] is True
    assert call.body["inputs"] == {
        "model": "iris", "version": "7", "source": "mlflow", "kind": "model_version.created",
        "event-id": "0123456789abcdef0123456789abcdef", "tags": json.dumps({"stage": "candidate"}, separators=(",", ":")),
        "artifact-uri": "models:/iris/7", "registry": "", "tracking-uri": ""}
    assert call.params["workflow_id"] == "deploy-model.yml"
    assert len(server.requests) == 1  # one API call per dispatch


def test_extra_inputs_arrive_as_workflow_input_text(serve, monkeypatch):
    """A YAML `true` in the rule is the "true" a boolean workflow input takes, not Python's "True"."""
    server = github(serve, monkeypatch)
    get_provider("github").dispatch(make_run({**PIPELINE, "inputs": {"dry_run": True, "canary": False, "replicas": 2}}))
    inputs = server.calls(DISPATCH)[0].body["inputs"]
    assert (inputs["dry_run"], inputs["canary"], inputs["replicas"]) == ("true", "false", "2")


def test_ref_defaults_to_the_default_branch_and_204_gives_the_workflow_page(serve, monkeypatch):
    server = github(serve, monkeypatch)
    pipeline = {**PIPELINE, "return_run_details": False}
    del pipeline["ref"]
    result = get_provider("github").dispatch(make_run(pipeline))
    assert server.calls(DISPATCH)[0].body["ref"] == "trunk"
    assert "return_run_details" not in server.calls(DISPATCH)[0].body
    assert result.url == f"https://github.com/{OWNER}/{REPO}/actions/workflows/deploy-model.yml"
    assert result.external_id is None
    assert [r.operation for r in server.requests] == ["repos/get", DISPATCH]


def test_enterprise_server_api_url(serve, monkeypatch):
    server = github(serve, monkeypatch, prefix="/api/v3")
    result = get_provider("github").dispatch(make_run({**PIPELINE, "mode": "repository_dispatch"}))
    assert server.calls("repos/create-dispatch-event")
    assert result.url == f"{server.url}/{OWNER}/{REPO}/actions"


def test_repository_dispatch_sends_client_payload(serve, monkeypatch):
    server = github(serve, monkeypatch)
    result = get_provider("github").dispatch(make_run({**PIPELINE, "mode": "repository_dispatch", "event_type": "deploy-model"}))
    [call] = server.calls("repos/create-dispatch-event")
    assert call.body["event_type"] == "deploy-model"
    assert call.body["client_payload"]["model"] == "iris" and call.body["client_payload"]["rule"] == "deploy-iris"
    assert len(call.body["client_payload"]) <= 10
    assert result.url == f"https://github.com/{OWNER}/{REPO}/actions"


def test_too_many_workflow_inputs_fail_before_sending(serve, monkeypatch):
    server = github(serve, monkeypatch)
    extra = {f"extra{i}": "x" for i in range(17)}  # beside the 9 event inputs
    with pytest.raises(ConfigError, match="26 workflow inputs, GitHub accepts at most 25"):
        get_provider("github").dispatch(make_run({**PIPELINE, "inputs": extra}))
    assert server.requests == []


def test_client_payload_over_64_kb_fails_before_sending(serve, monkeypatch):
    server = github(serve, monkeypatch)
    tags = {f"tag{i:03d}": "v" * 250 for i in range(300)}
    with pytest.raises(ConfigError, match="client_payload is .* bytes, GitHub accepts less than 65536"):
        get_provider("github").dispatch(make_run({**PIPELINE, "mode": "repository_dispatch"}, tags=tags))
    assert server.requests == []


def test_hostile_model_name_never_reaches_github(serve, monkeypatch):
    server = github(serve, monkeypatch)
    with pytest.raises(PayloadError, match="model"):
        get_provider("github").dispatch(make_run(PIPELINE, model="x${{ secrets.T }}"))
    assert server.requests == []


@pytest.mark.parametrize(
    "status,body,expect",
    [
        (404, {"message": "Not Found"}, "pipeline.workflow"),
        (422, {"message": "Unexpected inputs provided: [\"kind\"]"}, "declares workflow_dispatch with the inputs"),
        (403, {"message": "Resource not accessible by integration"}, "actions: write"),
    ],
)
def test_client_errors_fail_at_once_with_the_fix(serve, monkeypatch, status, body, expect):
    server = github(serve, monkeypatch)
    server.then(DISPATCH, Reply(status, body))
    with pytest.raises(ConfigError, match=expect) as info:
        get_provider("github").dispatch(make_run(PIPELINE))
    assert body["message"] in info.value.message and info.value.details["status"] == status
    assert len(server.calls(DISPATCH)) == 1


def test_bad_token_is_401_and_named(serve, monkeypatch):
    server = github(serve, monkeypatch)
    monkeypatch.setenv("GITHUB_TOKEN", "wrong")
    with pytest.raises(ConfigError, match="Set GITHUB_TOKEN") as info:
        get_provider("github").dispatch(make_run(PIPELINE))
    assert "wrong" not in info.value.message
    assert len(server.requests) == 1


def test_missing_credentials_say_which_variables(monkeypatch):
    monkeypatch.setenv("GITHUB_API_URL", "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="GITHUB_TOKEN"):
        get_provider("github").dispatch(make_run(PIPELINE))


def test_429_waits_for_retry_after_then_succeeds(serve, monkeypatch):
    server = github(serve, monkeypatch)
    server.then(DISPATCH, Reply(429, {"message": "slow down"}, {"Retry-After": "1"}))
    started = time.monotonic()
    result = get_provider("github").dispatch(make_run(PIPELINE))
    assert time.monotonic() - started >= 1.0
    assert result.external_id == "9001" and len(server.calls(DISPATCH)) == 2


def test_secondary_rate_limit_403_with_retry_after_is_retried(serve, monkeypatch):
    server = github(serve, monkeypatch)
    server.then(DISPATCH, Reply(403, {"message": "You have exceeded a secondary rate limit"}, {"Retry-After": "0"}))
    assert get_provider("github").dispatch(make_run(PIPELINE)).external_id == "9001"
    assert len(server.calls(DISPATCH)) == 2


def test_5xx_is_retried(serve, monkeypatch):
    server = github(serve, monkeypatch)
    server.then(DISPATCH, Reply(502, {"message": "Server Error"}), Reply(503, {"message": "Unavailable"}))
    assert get_provider("github").dispatch(make_run(PIPELINE)).external_id == "9001"
    assert len(server.calls(DISPATCH)) == 3


def test_a_dispatch_that_timed_out_is_not_sent_again(serve, monkeypatch):
    """The request reached GitHub and no answer came back: the run may exist, so a second
    request could start it twice. One request, and an error that says to look first."""
    server = github(serve, monkeypatch)
    monkeypatch.setenv("PIPELINE_PLUGIN_HTTP_TIMEOUT", "1")
    server.then(DISPATCH, Reply(200, {}, delay=2.5))
    with pytest.raises(ServiceError, match="may have started the run") as info:
        get_provider("github").dispatch(make_run(PIPELINE))
    assert info.value.details["outcome"] == "unknown"
    assert len(server.calls(DISPATCH)) == 1


def test_a_read_timeout_before_the_start_request_is_retried(serve, monkeypatch):
    """Looking up the default branch changes nothing: a timeout there is retried."""
    server = github(serve, monkeypatch)
    monkeypatch.setenv("PIPELINE_PLUGIN_HTTP_TIMEOUT", "1")
    server.then("repos/get", Reply(200, None, delay=2.5))
    pipeline = dict(PIPELINE)
    del pipeline["ref"]
    assert get_provider("github").dispatch(make_run(pipeline)).external_id == "9001"
    assert len(server.calls("repos/get")) == 2 and len(server.calls(DISPATCH)) == 1


def test_a_refused_connection_is_retried_and_bounded(monkeypatch):
    """Nothing listens: the request never arrived, so retrying cannot start a run twice."""
    from conftest import unused_port

    monkeypatch.setenv("GITHUB_API_URL", f"http://127.0.0.1:{unused_port()}")
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    monkeypatch.setenv("PIPELINE_PLUGIN_HTTP_RETRIES", "2")
    monkeypatch.setenv("PIPELINE_PLUGIN_HTTP_BACKOFF", "0.01")
    with pytest.raises(ServiceError, match="after 3 attempts"):
        get_provider("github").dispatch(make_run(PIPELINE))


def test_persistent_5xx_gives_up_bounded(serve, monkeypatch):
    server = github(serve, monkeypatch)
    server.on(DISPATCH, Reply(500, {"message": "Server Error"}))
    with pytest.raises(ServiceError, match="after 4 attempts"):
        get_provider("github").dispatch(make_run(PIPELINE))
    assert len(server.calls(DISPATCH)) == 4


def test_missing_repository_is_404_naming_the_rule_key(serve, monkeypatch):
    server = github(serve, monkeypatch)
    server.on("repos/get", Reply(404, {"message": "Not Found"}))
    pipeline = dict(PIPELINE)
    del pipeline["ref"]
    with pytest.raises(ConfigError, match="pipeline.repository"):
        get_provider("github").dispatch(make_run(pipeline))
    assert server.calls(DISPATCH) == []


def test_retry_after_beyond_the_limit_fails_without_waiting(serve, monkeypatch):
    server = github(serve, monkeypatch)
    server.then(DISPATCH, Reply(429, {"message": "slow down"}, {"Retry-After": "3600"}))
    with pytest.raises(ServiceError, match="asks to wait 3600s"):
        get_provider("github").dispatch(make_run(PIPELINE))
    assert len(server.calls(DISPATCH)) == 1


def test_incomplete_github_app_credentials_are_named(monkeypatch):
    monkeypatch.setenv("GITHUB_APP_ID", "12345")
    monkeypatch.setenv("GITHUB_APP_INSTALLATION_ID", "abc")
    with pytest.raises(ConfigError, match="GITHUB_APP_PRIVATE_KEY .* GITHUB_APP_INSTALLATION_ID"):
        get_provider("github").dispatch(make_run(PIPELINE))


def test_github_app_installation_token(serve, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    server = github(serve, monkeypatch)
    monkeypatch.delenv("GITHUB_TOKEN")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    # the installation-token route is not in the trimmed description: served explicitly
    server.extra("POST", r"^/app/installations/99/access_tokens$", lambda req: Reply(201, {
        "token": TOKEN, "expires_at": "2099-01-01T00:00:00Z", "permissions": {"actions": "write"}})
        if req.header("Authorization").startswith("Bearer ey") else Reply(401, {"message": "bad JWT"}))
    monkeypatch.setenv("GITHUB_APP_ID", "12345")
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", pem)
    monkeypatch.setenv("GITHUB_APP_INSTALLATION_ID", "99")
    result = get_provider("github").dispatch(make_run(PIPELINE))
    assert result.external_id == "9001"
    assert len(server.calls("extra POST /app/installations/99/access_tokens")) == 1
    assert server.calls(DISPATCH)[0].header("Authorization") == f"token {TOKEN}"
