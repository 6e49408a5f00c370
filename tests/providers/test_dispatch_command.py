"""`pipeline-plugin dispatch` end to end: rule file + event file -> the real SDK -> the contract server."""

from __future__ import annotations

import json

from pipeline_plugin.cli import main

from .test_gitlab import CREATE, gitlab

RULE = """\
name: deploy-iris-gitlab
match:
  source: mlflow
  model: iris
pipeline:
  provider: gitlab
  project: ml/models
  ref: main
  variables:
    DEPLOY_TARGET: process
"""


def test_dispatch_command_starts_the_pipeline_and_reports_its_url(serve, monkeypatch, tmp_path, capsys):
    server = gitlab(serve, monkeypatch)
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "rule.yml").write_text(RULE)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"source": "mlflow", "kind": "model_version.created", "model": "iris", "version": "3"}))
    outputs = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    code = main(["dispatch", "--provider", "gitlab", "--triggers", str(triggers), "--rule", "deploy-iris-gitlab",
                 "--event", str(event), "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "dispatched" and data["url"].endswith("/-/pipelines/4711")
    [call] = server.calls(CREATE)
    variables = {v["key"]: v["value"] for v in call.body["variables"]}
    assert variables["MODEL_VERSION"] == "3" and variables["DEPLOY_TARGET"] == "process"
    assert variables["EVENT_ID"] == data["run_id"]
    assert "run-url<<" in outputs.read_text() and data["url"] in outputs.read_text()


def test_dispatch_command_exit_code_on_refusal(serve, monkeypatch, tmp_path, capsys):
    server = gitlab(serve, monkeypatch)
    monkeypatch.setenv("GITLAB_TOKEN", "revoked")
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "rule.yml").write_text(RULE)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"source": "mlflow", "kind": "model_version.created", "model": "iris", "version": "3"}))
    assert main(["dispatch", "--provider", "gitlab", "--triggers", str(triggers), "--rule", "deploy-iris-gitlab",
                 "--event", str(event)]) == 2
    err = capsys.readouterr().err
    assert "Set GITLAB_TOKEN" in err and "revoked" not in err
    assert len(server.calls(CREATE)) == 1


def test_dispatch_command_refuses_a_provider_the_rule_does_not_use(tmp_path, capsys):
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "rule.yml").write_text(RULE)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"source": "mlflow", "kind": "model_version.created", "model": "iris", "version": "3"}))
    assert main(["dispatch", "--provider", "github", "--triggers", str(triggers), "--rule", "deploy-iris-gitlab",
                 "--event", str(event)]) == 2
    assert "pass --provider gitlab" in capsys.readouterr().err


def test_a_run_started_by_hand_carries_the_same_id_the_worker_would_give_it():
    from pipeline_plugin.events import ModelVersionEvent
    from pipeline_plugin.inbox import event_id_for, run_id_for
    from pipeline_plugin.render import event_id

    event = ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "iris", "version": "3"})
    assert event_id(event, "deploy-iris-gitlab") == run_id_for(event_id_for(event), "deploy-iris-gitlab")
    assert event_id(event, "deploy-iris-gitlab") != event_id(event, "other-rule")
