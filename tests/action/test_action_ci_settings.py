"""The rendered GitHub workflow's stage steps, run through action.yml as the runner would (its
expressions evaluated with the repository's secrets and variables), hand pipeline-plugin what it
needs on a separate runner: the shared store's URL (masked, only through the environment), the
MLflow tracking URI and credentials, and the event's source and registry identity for `package`.
A stand-in `pipeline-plugin` on PATH records each call's arguments and environment."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.render import render_pipeline

from .test_action import SYSTEM_PATH, run_action

STAGES = ("package", "deploy", "smoke-test", "promote", "rollback")
DB_URL = "postgresql://deployer:pw-7f3k9q@db.internal:5432/pipeline"


@pytest.fixture
def stub(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    script = bin_dir / "pipeline-plugin"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps({{'argv': sys.argv[1:], 'env': dict(os.environ)}}) + '\\n')\n"
        "print('{}')\n")
    script.chmod(0o755)

    def calls() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return bin_dir, calls


def evaluate(text: str, ctx: dict[str, dict[str, str]]) -> str:
    """GitHub's ${{ a || b }} over the contexts the rendered workflow uses (missing values: '')."""
    def one(m: re.Match[str]) -> str:
        for term in m.group(1).split("||"):
            term = term.strip()
            head, _, rest = term.partition(".")
            if head == "github":
                assert rest.startswith("event.client_payload."), term
                value = ctx["client_payload"].get(rest.split(".", 2)[2], "")
            elif head in ("steps", "needs"):
                value = ctx[head].get(rest, "")
            else:
                assert head in ("inputs", "env", "vars", "secrets"), term
                value = ctx[head].get(rest, "")
            if value:
                return value
        return ""

    return re.sub(r"\$\{\{\s*(.*?)\s*\}\}", one, text)


def workflow_steps(event: ModelVersionEvent, secrets: dict[str, str], variables: dict[str, str]):
    doc = yaml.safe_load(render_pipeline("github", event, "deploy-churn", {"action": "acme/pipeline-plugin@v0"}).text)
    ctx: dict[str, dict[str, str]] = {
        "inputs": {k: str(v["default"]) for k, v in doc[True]["workflow_dispatch"]["inputs"].items()},
        "client_payload": {}, "vars": variables, "secrets": secrets, "env": {},
        "steps": {"names.outputs.model-uri": "models:/churn/3", "names.outputs.image": "localhost:5000/models/churn:3"},
        "needs": {"package.outputs.image": "localhost:5000/models/churn:3",
                  "deploy-staging.outputs.scoring-uri": "http://127.0.0.1:8890/score"},
    }
    workflow_env = {k: evaluate(str(v), ctx) for k, v in doc["env"].items()}
    ctx["env"] = workflow_env
    for job in doc["jobs"].values():
        for step in job["steps"]:
            if step.get("uses") == "acme/pipeline-plugin@v0":
                with_ = {k: evaluate(str(v), ctx) for k, v in step["with"].items()}
                step_env = {k: evaluate(str(v), ctx) for k, v in (step.get("env") or {}).items()}
                yield with_, {**workflow_env, **step_env}


def run_workflow(event, secrets, variables, tmp_path, stub) -> tuple[dict[str, dict], str]:
    bin_dir, calls = stub
    out = ""
    for with_, env in workflow_steps(event, secrets, variables):
        run = run_action(with_, tmp_path, tmp_path, extra_env={k: v for k, v in env.items()},
                         steps=slice(1, None), path=[str(bin_dir), *SYSTEM_PATH])
        assert run.returncode == 0, run.stdout + run.stderr
        out += run.stdout + run.stderr
    seen = {c["argv"][0]: c for c in calls() if c["argv"] and c["argv"][0] in STAGES}
    assert set(seen) == set(STAGES)
    return seen, out


def test_every_stage_gets_the_database_url_masked_and_never_printed(tmp_path, stub):
    event = ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "churn",
                                         "version": "3", "registry": {"tracking_uri": "http://mlflow.internal:5000"}})
    seen, out = run_workflow(event, {"PIPELINE_PLUGIN_DATABASE_URL": DB_URL, "MLFLOW_TRACKING_TOKEN": "tok-1"}, {},
                             tmp_path, stub)
    for stage, call in seen.items():
        assert call["env"]["PIPELINE_PLUGIN_DATABASE_URL"] == DB_URL, stage
        assert call["env"]["MLFLOW_TRACKING_URI"] == "http://mlflow.internal:5000", stage
        assert DB_URL not in " ".join(call["argv"]), stage
    # masked before anything runs (the URL and its password), and otherwise never in the log
    masks = [line for line in out.splitlines() if line.startswith("::add-mask::")]
    assert f"::add-mask::{DB_URL}" in masks and "::add-mask::pw-7f3k9q" in masks
    assert out.replace(f"::add-mask::{DB_URL}", "").replace("::add-mask::pw-7f3k9q", "").count("pw-7f3k9q") == 0
    # package records where the version came from: promote writes back there (MLflow's aliases)
    argv = seen["package"]["argv"]
    assert argv[argv.index("--source") + 1] == "mlflow"
    assert argv[argv.index("--registry") + 1] == "tracking_uri=http://mlflow.internal:5000"
    for stage in ("package", "promote", "rollback"):
        assert seen[stage]["env"]["MLFLOW_TRACKING_TOKEN"] == "tok-1", stage


def test_without_the_secrets_the_stages_see_no_empty_settings(tmp_path, stub):
    """No database secret: the runner's state directory, as before (an empty URL would be an error);
    no tracking URI in the event: the repository variable MLFLOW_TRACKING_URI."""
    event = ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "churn",
                                         "version": "3"})
    seen, _ = run_workflow(event, {}, {"MLFLOW_TRACKING_URI": "https://mlflow.example.com"}, tmp_path, stub)
    for stage, call in seen.items():
        env = call["env"]
        assert "PIPELINE_PLUGIN_DATABASE_URL" not in env and "MLFLOW_TRACKING_TOKEN" not in env, stage
        assert env["MLFLOW_TRACKING_URI"] == "https://mlflow.example.com", stage
    argv = seen["package"]["argv"]
    assert argv[argv.index("--source") + 1] == "mlflow" and "--registry" not in argv


def test_the_repository_tracking_uri_wins_over_the_event_s(tmp_path, stub):
    """The MLflow credentials go to the server the repository names, never to an address an event
    carries (an event's tracking URI may come from a webhook URL's unsigned query string)."""
    event = ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "churn",
                                         "version": "3", "registry": {"tracking_uri": "http://elsewhere.example:5000"}})
    seen, _ = run_workflow(event, {"MLFLOW_TRACKING_TOKEN": "tok-1"}, {"MLFLOW_TRACKING_URI": "https://mlflow.example.com"},
                           tmp_path, stub)
    for stage, call in seen.items():
        assert call["env"]["MLFLOW_TRACKING_URI"] == "https://mlflow.example.com", stage
