"""The rendered pipelines and action.yml call this tool's commands and action with names that exist:
a renamed flag or action input fails here, not in a user's CI run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline_plugin.cli import build_parser
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.render import render_pipeline

ROOT = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())


def command_flags() -> dict[str, set[str]]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return {name: set(p._option_string_actions) for name, p in sub.choices.items()}


def event() -> ModelVersionEvent:
    return ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "iris", "version": "2"})


def _calls(script: str) -> list[tuple[str, list[str]]]:
    """(command, flags) for each `pipeline-plugin CMD ...` or `args=(CMD ...)` / `set -- CMD ...` build."""
    calls = []
    text = script.replace("\\\n", " ")
    for m in re.finditer(r"(?:pipeline-plugin |args=\(|set -- )([a-z][a-z-]+)\b(.*?)(?:\n(?!\s*(?:add|if|args\+=|set -- \"\$@\"|--))|$)",
                         text, re.S):
        command, rest = m.group(1), m.group(2)
        calls.append((command, re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", rest)))
    return calls


@pytest.mark.parametrize("provider", ["azure-pipelines", "gitlab"])
def test_template_scripts_use_existing_commands_and_flags(provider):
    flags = command_flags()
    doc = yaml.safe_load(render_pipeline(provider, event(), "r", {"expect": "expect.json", "config": "c.json"}).text)
    scripts = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("bash", "script") :
                    scripts.extend(value if isinstance(value, list) else [value])
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    seen = set()
    for script in scripts:
        for command, used in _calls(script):
            if command in ("install",):
                continue
            assert command in flags, f"{provider}: unknown command {command!r} in {script!r}"
            unknown = set(used) - flags[command]
            assert not unknown, f"{provider}: {command} has no {sorted(unknown)}"
            seen.add(command)
    assert {"package", "deploy", "smoke-test", "promote", "rollback"} <= seen


def test_action_stages_use_existing_commands_and_flags():
    flags = command_flags()
    script = ACTION["runs"]["steps"][-1]["run"]
    for m in re.finditer(r"^\s+([a-z-]+)\)\n(.*?);;", script, re.S | re.M):
        stage, body = m.group(1), m.group(2)
        assert stage in flags, f"action stage {stage} is not a command"
        used = set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", body))
        assert used <= flags[stage], f"{stage}: {sorted(used - flags[stage])}"
    for command in ("ci-deployment", "ci-summary"):
        start = script.index(f"pipeline-plugin {command}")
        call = script[start:script.index("||", start)]
        used = set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", call))
        assert used and used <= flags[command], (command, sorted(used - flags[command]))


def test_workflow_steps_only_pass_inputs_the_action_declares():
    doc = yaml.safe_load(render_pipeline("github", event(), "r", {"action": "acme/pipeline-plugin@v1", "expect": "e.json",
                                                                   "source_dir": "src", "requirements": "req.txt"}).text)
    declared = set(ACTION["inputs"])
    for job in doc["jobs"].values():
        for step in job["steps"]:
            if step.get("uses") == "acme/pipeline-plugin@v1":
                assert set(step["with"]) <= declared, set(step["with"]) - declared
                assert step["with"]["stage"] in {"package", "deploy", "smoke-test", "promote", "rollback"}


def test_workflow_job_outputs_name_outputs_the_action_has():
    doc = yaml.safe_load(render_pipeline("github", event(), "r", {}).text)
    action_outputs = set(ACTION["outputs"])
    for job in doc["jobs"].values():
        for value in (job.get("outputs") or {}).values():
            m = re.fullmatch(r"\$\{\{ steps\.([a-z-]+)\.outputs\.([a-z-]+) \}\}", value)
            assert m, value
            step = next(s for s in job["steps"] if s.get("id") == m.group(1))
            if "uses" in step:
                assert m.group(2) in action_outputs, m.group(2)


def _scripts(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("bash", "script", "run", "before_script"):
                yield from (value if isinstance(value, list) else [value])
            else:
                yield from _scripts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _scripts(item)


@pytest.mark.parametrize("provider", ["github", "azure-pipelines", "gitlab", "action.yml"])
def test_every_script_is_valid_bash(provider, tmp_path):
    import subprocess

    if provider == "action.yml":
        doc = ACTION
    else:
        doc = yaml.safe_load(render_pipeline(provider, event(), "r", {"approval": True}).text)
    scripts = [s for s in _scripts(doc) if isinstance(s, str)]
    assert scripts
    for i, script in enumerate(scripts):
        path = tmp_path / f"s{i}.sh"
        path.write_text(script)
        # GitLab runs job scripts with sh where the image has no bash: keep them POSIX
        shells = ["bash", "dash"] if provider == "gitlab" else ["bash"]
        for shell in shells:
            proc = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
            assert proc.returncode == 0, f"{provider} script {i} ({shell}): {proc.stderr}\n{script}"


@pytest.mark.parametrize("provider", ["github", "azure-pipelines", "gitlab"])
def test_the_rollback_after_a_failed_promotion_only_acts_on_the_version_it_promoted(provider):
    """promote rolls production back itself; the pipeline's own rollback job must then change
    nothing (a plain rollback would go back one version further). Each one names the version."""
    doc = yaml.safe_load(render_pipeline(provider, event(), "r", {}).text)
    if provider == "github":
        [job] = [j for j in doc["jobs"].values() if any((s.get("with") or {}).get("stage") == "rollback" for s in j["steps"])]
        [step] = [s for s in job["steps"] if (s.get("with") or {}).get("stage") == "rollback"]
        assert step["with"]["if-serving"] == "${{ env.MODEL_VERSION }}"
        assert "environment" not in job  # required reviewers must not hold a rollback
        return
    rollbacks = [s for s in _scripts(doc) if "pipeline-plugin rollback" in s]
    assert rollbacks and all('--if-serving "$MODEL_VERSION"' in s for s in rollbacks), rollbacks


def test_example_rules_send_only_inputs_their_rendered_pipeline_declares():
    """GitHub answers 422 and Azure DevOps 400 for an input or parameter the pipeline does not declare."""
    from pipeline_plugin.rules import load_rules

    checked = 0
    for rule in load_rules(ROOT / "triggers"):
        provider = rule.pipeline.get("provider") if rule.pipeline else None
        if provider == "github":
            doc = yaml.safe_load(render_pipeline("github", event(), rule.name, rule.pipeline).text)
            declared = set(doc[True]["workflow_dispatch"]["inputs"])  # YAML 1.1 reads `on:` as True
            sent = set(rule.pipeline.get("inputs") or {})
        elif provider == "azure-devops":
            doc = yaml.safe_load(render_pipeline("azure-pipelines", event(), rule.name, rule.pipeline).text)
            declared = {p["name"] for p in doc["parameters"]}
            sent = set(rule.pipeline.get("parameters") or {})
        else:
            continue
        assert sent <= declared, (rule.name, sorted(sent - declared))
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("provider", ["github", "azure-pipelines", "gitlab"])
def test_the_staging_smoke_test_is_recorded_for_the_promotion(provider):
    """promote refuses an image without a passing smoke test recorded for the service's staging:
    each pipeline's smoke test must name the service and environment, or every promotion fails."""
    doc = yaml.safe_load(render_pipeline(provider, event(), "r", {}).text)
    if provider == "github":
        [step] = [s for j in doc["jobs"].values() for s in j["steps"] if (s.get("with") or {}).get("stage") == "smoke-test"]
        assert step["with"]["service"] == "${{ env.SERVICE }}" and step["with"]["environment"] == "staging"
        return
    smokes = [s for s in _scripts(doc) if "smoke-test --url" in s]
    assert smokes and all('--name "$SERVICE" --env staging' in s for s in smokes), smokes
