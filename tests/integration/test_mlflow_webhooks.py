"""A real MLflow 3.17.2 tracking server delivers model-registry webhooks (created through the MLflow
client, with a secret) to a running `pipeline-plugin serve`; versions registered with the MLflow
client arrive as stored, matched events."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from pipeline_plugin.inbox import Inbox
from services import mlflow_server, serve_process

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

SECRET = "mlflow-integration-secret"
RULES = """
- name: churn-candidates-from-v2
  match:
    source: mlflow
    kind: model_version.created
    model: "churn-*"
    version: ">=2"
    tags: {stage_hint: candidate}
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
    with mlflow_server(tmp_path) as mlflow:
        config.write_text(f"sources:\n  mlflow:\n    tracking_uri: {mlflow.url}\n")
        with serve_process(
            state,
            triggers,
            env={"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET},
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
                done = len(events) >= 5 and all(e.status != "pending" for e in events)
                return events if done else None

            events = wait_for(settled, what="5 processed events from MLflow")
            metrics = httpx.get(f"{serve.url}/metrics").text

    by_key = {(e.event.kind, e.event.model, e.event.version): e for e in events}
    assert len(events) == 5, [e.summary() for e in events]
    v1 = by_key[("model_version.created", "churn-model", "1")]
    v2 = by_key[("model_version.created", "churn-model", "2")]
    v3 = by_key[("model_version.created", "churn-model", "3")]
    alias = by_key[("alias.set", "churn-model", "2")]
    example = next(e for e in events if e.event.model == "example_model")

    assert v1.status == "unmatched"  # version 1 < 2
    assert v2.status == "matched" and v2.rules == ["churn-candidates-from-v2"]
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
