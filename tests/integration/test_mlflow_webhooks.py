"""A real MLflow 3.17.2 tracking server delivers model-registry webhooks (created through the MLflow
client, with a secret) to a running `pipeline-plugin serve`; versions registered with the MLflow
client arrive as stored, matched events, and the matched rule's pipeline is dispatched once through
the github provider (PyGithub) to a server that checks requests against GitHub's REST description;
the run URL it answers is recorded on the event."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from pipeline_plugin.inbox import Inbox
from contract_server import Contract, ContractServer, Reply
from services import mlflow_server, serve_process

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

SECRET = "mlflow-integration-secret"
GITHUB_TOKEN = "gh-token-for-integration"
DISPATCH = "actions/create-workflow-dispatch"


def fake_github() -> ContractServer:
    server = ContractServer(
        [Contract("github.json")], auth=lambda r: r.header("Authorization") in (f"token {GITHUB_TOKEN}", f"Bearer {GITHUB_TOKEN}")
    )
    server.on("repos/get", lambda req: Reply(200, {
        "id": 1, "name": "churn", "full_name": "acme/churn", "default_branch": "main",
        "url": f"{server.url}/repos/acme/churn", "html_url": "https://github.com/acme/churn"}))
    server.on("actions/get-workflow", lambda req: Reply(200, {
        "id": 77, "node_id": "W_1", "name": "Deploy model", "path": ".github/workflows/deploy-model.yml",
        "state": "active", "url": f"{server.url}/repos/acme/churn/actions/workflows/77",
        "html_url": "https://github.com/acme/churn/actions/workflows/deploy-model.yml",
        "badge_url": "", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}))
    server.on(DISPATCH, lambda req: Reply(200, {
        "workflow_run_id": 9001, "run_url": f"{server.url}/repos/acme/churn/actions/runs/9001",
        "html_url": "https://github.com/acme/churn/actions/runs/9001"}))
    return server
RULES = """
- name: churn-candidates-from-v2
  match:
    source: mlflow
    kind: model_version.created
    model: "churn-*"
    version: ">=2"
    tags: {stage_hint: candidate}
  pipeline:
    provider: github
    repository: acme/churn
    workflow: deploy-model.yml
    ref: main
- name: churn-champion
  match:
    kind: alias.set
    model: "churn-*"
    alias: champion
"""


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def test_mlflow_registry_events_arrive_verified_stored_and_matched(tmp_path):
    from mlflow import MlflowClient

    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "rules.yml").write_text(RULES)
    state = tmp_path / "state"
    config = tmp_path / "listener.yml"
    with mlflow_server(tmp_path) as mlflow, fake_github() as github:
        config.write_text(f"sources:\n  mlflow:\n    tracking_uri: {mlflow.url}\n")
        with serve_process(
            state,
            triggers,
            env={
                "PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET,
                "GITHUB_API_URL": github.url,
                "GITHUB_TOKEN": GITHUB_TOKEN,
                "PIPELINE_PLUGIN_HTTP_RETRIES": "1",
            },
            extra_args=["--config", str(config)],
        ) as serve:
            client = MlflowClient(tracking_uri=mlflow.url, registry_uri=mlflow.url)
            hook = client.create_webhook(
                name="pipeline-plugin",
                url=f"{serve.url}/webhooks/mlflow",
                events=["model_version.created", "model_version_alias.created", "model_version_tag.set"],
                secret=SECRET,
            )
            # a webhook with the wrong secret is refused: nothing from it is stored
            client.create_webhook(
                name="wrong-secret",
                url=f"{serve.url}/webhooks/mlflow",
                events=["model_version.created"],
                secret="not-the-secret",
            )
            client.create_registered_model("churn-model")
            run = client.create_run(client.create_experiment("churn"))
            source = f"{run.info.artifact_uri}/model"
            for hint in ("candidate", "candidate", "shadow"):
                client.create_model_version("churn-model", source=source, run_id=run.info.run_id, tags={"stage_hint": hint})
            client.set_registered_model_alias("churn-model", "champion", "2")
            result = client.test_webhook(hook.webhook_id)
            assert result.success, result

            inbox = Inbox(state)

            def settled():
                events = inbox.list()
                done = len(events) >= 5 and all(e.done for e in events)
                return events if done else None

            events = [inbox.get(e.id) for e in wait_for(settled, what="5 processed events from MLflow")]
            metrics = httpx.get(f"{serve.url}/metrics").text
            dispatches = github.calls(DISPATCH)
        github.assert_clean()

    by_key = {(e.event.kind, e.event.model, e.event.version): e for e in events}
    assert len(events) == 5, [e.summary() for e in events]
    v1 = by_key[("model_version.created", "churn-model", "1")]
    v2 = by_key[("model_version.created", "churn-model", "2")]
    v3 = by_key[("model_version.created", "churn-model", "3")]
    alias = by_key[("alias.set", "churn-model", "2")]
    example = next(e for e in events if e.event.model == "example_model")

    assert v1.status == "unmatched"  # version 1 < 2
    assert v2.status == "matched" and v2.rules == ["churn-candidates-from-v2"]
    # its pipeline was dispatched once, with the event as inputs, and the run URL recorded
    [call] = dispatches
    assert call.body["inputs"]["model"] == "churn-model" and call.body["inputs"]["version"] == "2"
    [run] = v2.runs
    assert (run.provider, run.status) == ("github", "dispatched")
    assert run.url == "https://github.com/acme/churn/actions/runs/9001"
    assert 'pipeline_plugin_pipeline_runs{status="dispatched"} 1.0' in metrics
    assert v3.status == "unmatched"  # tag stage_hint=shadow
    assert alias.status == "matched" and alias.rules == ["churn-champion"] and alias.event.alias == "champion"
    assert example.event.is_test and example.status == "ignored"
    for e in (v1, v2, v3):
        assert e.event.registry["tracking_uri"] == mlflow.url
        assert e.event.artifact_uri == source
        assert e.event.tags.get("stage_hint")
    # the webhook with the wrong secret delivered the three versions too: each refused with 401
    assert 'pipeline_plugin_deliveries_total{outcome="unauthorized",source="mlflow"} 3.0' in metrics
    assert json.loads(json.dumps(v2.to_dict()))["id"] == v2.id
