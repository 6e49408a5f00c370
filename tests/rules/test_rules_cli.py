"""`pipeline-plugin rules check` and `rules explain`: exit codes, human text, --json.

Runs the installed console script, as a user does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .helpers import event, write

CLI = [str(Path(sys.executable).with_name("pipeline-plugin"))]


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_check_ok_prints_a_summary(tmp_path):
    write(tmp_path, "a.yml", "name: churn\nmatch: {model: 'churn-*'}\npipeline: {provider: gitlab, project: g/p}\n")
    write(tmp_path, "b.yaml", "name: paused\nenabled: false\nmatch: {}\n")
    result = run("rules", "check", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"2 rules in {tmp_path} (1 enabled)"
    assert "churn" in lines[1] and "provider gitlab" in lines[1] and f"{tmp_path}/a.yml:1" in lines[1]
    assert "paused" in lines[2] and "[disabled]" in lines[2] and "records matches only" in lines[2]


def test_check_json(tmp_path):
    write(tmp_path, "a.yml", "name: churn\nmatch: {model: 'churn-*'}\n")
    result = run("rules", "check", str(tmp_path), "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["count"] == 1 and data["errors"] == []
    assert data["rules"][0]["name"] == "churn" and data["rules"][0]["match"] == {"model": "churn-*"}


def test_check_reports_every_error_and_exits_2(tmp_path):
    write(tmp_path, "churn.yml", "name: churn\nmatch:\n  kind: model_version.created\n  modle: 'churn-*'\n")
    write(tmp_path, "gh.yml", "name: gh\nmatch: {}\npipeline:\n  provider: github\n  repository: a/b\n")
    result = run("rules", "check", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{tmp_path}/churn.yml:4: unknown key 'modle' in match; did you mean 'model'?" in result.stderr
    assert f"{tmp_path}/gh.yml:4: pipeline for provider github needs 'workflow'" in result.stderr
    assert "2 errors in" in result.stderr

    as_json = run("rules", "check", str(tmp_path), "--json")
    assert as_json.returncode == 2
    data = json.loads(as_json.stdout)
    assert data["ok"] is False
    assert [(e["line"], e["field"], e["suggestion"]) for e in data["errors"]] == [
        (4, "match.modle", "did you mean 'model'?"),
        (4, "pipeline.workflow", "add workflow: the workflow file to dispatch, e.g. 'deploy-model.yml'"),
    ]


def test_check_empty_and_missing_folder(tmp_path):
    result = run("rules", "check", str(tmp_path))
    assert result.returncode == 0
    assert result.stdout.startswith(f"0 rules in {tmp_path}")
    missing = run("rules", "check", str(tmp_path / "nope"), "--json")
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["error"] == "ConfigError"
    assert "does not exist" in missing.stderr


def explain_setup(tmp_path):
    rules = tmp_path / "triggers"
    rules.mkdir()
    write(rules, "rules.yml", """
        - name: churn-to-production
          match: {source: mlflow, kind: model_version.created, model: "churn-*", version: ">=3"}
        - name: fraud
          match: {model: "fraud-*"}
        - name: paused
          enabled: false
          match: {}
    """)
    ev = tmp_path / "event.json"
    ev.write_text(json.dumps(event(model="churn-model", version="4").to_dict()))
    return rules, ev


def test_explain_human(tmp_path):
    rules, ev = explain_setup(tmp_path)
    result = run("rules", "explain", "--triggers", str(rules), "--event", str(ev))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "event: mlflow model_version.created model 'churn-model' version '4'"
    assert lines[1].split()[:2] == ["MATCH", "churn-to-production"]
    assert "version '4' satisfies '>=3'" in lines[1]
    assert lines[2].split()[:3] == ["no", "match", "fraud"]
    assert lines[2].endswith("model 'churn-model' does not match 'fraud-*'")
    assert lines[3].split()[:2] == ["disabled", "paused"]
    assert lines[4] == "1 of 3 rules matched"


def test_explain_json(tmp_path):
    rules, ev = explain_setup(tmp_path)
    result = run("rules", "explain", "--triggers", str(rules), "--event", str(ev), "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["matched"] == ["churn-to-production"]
    assert data["event"]["model"] == "churn-model"
    assert [(r["rule"], r["matched"], r["condition"]) for r in data["results"]] == [
        ("churn-to-production", True, None), ("fraud", False, "model"), ("paused", False, "enabled"),
    ]


def test_explain_bad_inputs_exit_2(tmp_path):
    rules, ev = explain_setup(tmp_path)
    bad_event = tmp_path / "bad.json"
    bad_event.write_text(json.dumps({"source": "mlflow", "kind": "model_version.created", "model": "m"}))
    result = run("rules", "explain", "--triggers", str(rules), "--event", str(bad_event), "--json")
    assert result.returncode == 2
    assert json.loads(result.stdout)["field"] == "version"
    assert "event field 'version' is missing" in result.stderr
    write(rules, "broken.yml", "name: b\nmatch: {modle: x}\n")
    result = run("rules", "explain", "--triggers", str(rules), "--event", str(ev))
    assert result.returncode == 2
    assert "broken.yml:2: unknown key 'modle' in match; did you mean 'model'?" in result.stderr


def test_explain_latest_from_the_inbox(tmp_path):
    from pipeline_plugin.inbox import Inbox

    rules = tmp_path / "triggers"
    rules.mkdir()
    write(rules, "latest.yml", "name: newest-only\nmatch: {version: latest}\n")
    state = tmp_path / "state"
    inbox = Inbox(state)
    inbox.put("mlflow", [event(version="5", delivery_id="d-5"), event(version="3", delivery_id="d-3")])
    inbox.close()
    ev = tmp_path / "event.json"
    ev.write_text(json.dumps(event(version="3").to_dict()))

    without = json.loads(run("rules", "explain", "--triggers", str(rules), "--event", str(ev), "--json").stdout)
    assert without["matched"] == ["newest-only"]  # no inbox: the event's own version is the latest
    result = run("rules", "explain", "--triggers", str(rules), "--event", str(ev), "--state-dir", str(state), "--json")
    assert result.returncode == 0, result.stderr
    (only,) = json.loads(result.stdout)["results"]
    assert only["matched"] is False
    assert only["reason"] == "version '3' is not the latest of model 'churn-model' (latest is '5')"
    missing = run("rules", "explain", "--triggers", str(rules), "--event", str(ev), "--state-dir", str(tmp_path / "no"))
    assert missing.returncode == 2 and "--state-dir" in missing.stderr


def test_check_names_files_as_the_user_wrote_the_folder(tmp_path):
    (tmp_path / "triggers").mkdir()
    write(tmp_path / "triggers", "churn.yml", """
        name: churn-to-production
        match:
          kind: model_version.created
          modle: "churn-*"
    """)
    result = run("rules", "check", "triggers", cwd=tmp_path)
    assert result.returncode == 2
    assert "error: triggers/churn.yml:4: unknown key 'modle' in match; did you mean 'model'?" in result.stderr.splitlines()


def test_check_warns_about_rules_that_deploy_on_removals(tmp_path):
    write(tmp_path, "a.yml", """
        - name: no-kind
          match: {model: "churn-*"}
          pipeline: {provider: gitlab, project: g/p}
        - name: all-model-kinds
          match: {kind: "model_version.*"}
          pipeline: {provider: gitlab, project: g/p}
        - name: fine
          match: {kind: model_version.created}
          pipeline: {provider: gitlab, project: g/p}
        - name: record-only
          match: {}
    """)
    result = run("rules", "check", str(tmp_path), "--json")
    assert result.returncode == 0
    warnings = json.loads(result.stdout)["warnings"]
    assert [(w["line"], w["field"]) for w in warnings] == [(1, "match.kind"), (4, "match.kind")]
    assert "deletions and rejections" in warnings[0]["message"]
    assert "model_version.deleted, model_version.rejected" in warnings[1]["message"]
    assert f"warning: {tmp_path}/a.yml:1: rule 'no-kind' starts a pipeline but sets no kind" in result.stderr
