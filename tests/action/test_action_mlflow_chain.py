"""The rendered GitHub workflow, run job by job the way a self-hosted runner runs it, on real Docker,
for a model version registered in a real MLflow server.

Each job gets a fresh workspace (what `actions/checkout` puts there: the example's scoring code),
a fresh empty state dir and its own $GITHUB_OUTPUT / $GITHUB_ENV / $GITHUB_STEP_SUMMARY files; its
`run:` steps run with bash, its `uses:` step runs this checkout's root action.yml
(tests/action/test_action.py's runner emulation), with the workflow's expressions evaluated over
the dispatch inputs, `vars`, `secrets`, `steps` and `needs`: job outputs (image, scoring-uri) are
handed on as the workflow declares. What the jobs share is one PostgreSQL database (the secret
PIPELINE_PLUGIN_DATABASE_URL, the action's `database-url` input) and the runner host.

Version 1 goes package (models:/NAME/1 fetched from MLflow) -> deploy staging -> smoke-test ->
promote, and MLflow's `production` alias then names it. Version 2, whose answer differs from the
repository's expected output, stops at the smoke test while production keeps serving version 1.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import unused_port

from pipeline_plugin.render import ACTION_REF, render_pipeline
from tests import ci_chain
from tests.ci_chain import database_url, proxy_dir  # noqa: F401 - the chain's module fixtures

from . import test_action
from .test_action import SYSTEM_PATH, parse_outputs, run_action
from .test_action_ci_settings import evaluate

pytestmark = [pytest.mark.docker, pytest.mark.mlflow, pytest.mark.slow]

# the action's install step, run once: this checkout pip-installed into a venv (tests/action/test_action.py)
runner_temp, installed = test_action.runner_temp, test_action.installed


@pytest.fixture(scope="module")
def service(docker_client, base_image) -> str:
    return f"gh-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory, service):
    name = f"churn-{service}"
    with ci_chain.mlflow_with_versions(tmp_path_factory.mktemp("mlflow"), name) as url:
        yield url, name


@dataclass
class Workflow:
    results: dict[str, str] = field(default_factory=dict)  # job -> success | failure | skipped
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # job -> its outputs
    logs: dict[str, str] = field(default_factory=dict)
    summaries: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def explain(self) -> str:
        return "\n".join(f"==== {job}: {self.results.get(job)}\n{log[-4000:]}" for job, log in self.logs.items())


def job_runs(job: dict, results: dict[str, str]) -> bool:
    """The job-level `if:` of the rendered workflow (GitHub's default is success())."""
    needs = job.get("needs") or []
    needs = [needs] if isinstance(needs, str) else needs
    cond = re.sub(r"^\$\{\{\s*(.*?)\s*\}\}$", r"\1", str(job.get("if", "success()")).strip())
    if cond == "always()":
        return True
    if cond == "success()":
        return all(results[n] == "success" for n in needs)
    m = re.fullmatch(r"failure\(\) && needs\.([\w-]+)\.result == 'failure'", cond)
    assert m, f"a job condition this emulation does not know: {cond}"
    return any(results[n] == "failure" for n in needs) and results[m.group(1)] == "failure"


def run_workflow(doc: dict, secrets_: dict[str, str], variables: dict[str, str], expected: dict, workdir: Path,
                 runner_temp: Path, installed: list[str], runner_env: dict[str, str]) -> Workflow:
    ctx: dict[str, dict[str, str]] = {
        "inputs": {k: str(v.get("default", "")) for k, v in doc[True]["workflow_dispatch"]["inputs"].items()},
        "client_payload": {}, "vars": variables, "secrets": secrets_, "env": {}, "steps": {}, "needs": {},
    }
    ctx["env"] = {k: evaluate(str(v), ctx) for k, v in doc["env"].items()}
    flow = Workflow()
    for name, job in doc["jobs"].items():
        if not job_runs(job, flow.results):
            flow.results[name] = "skipped"
            continue
        started = time.monotonic()
        jobdir = workdir / name  # a fresh workspace and state dir per job
        jobdir.mkdir(parents=True)
        workspace = jobdir / "workspace"
        summary = jobdir / "summary.md"
        summary.touch()
        ctx["steps"], log, result = {}, "", "success"
        for step in job["steps"]:
            step_env = {k: evaluate(str(v), ctx) for k, v in (step.get("env") or {}).items()}
            env = {**runner_env, **ctx["env"], **step_env}
            if step.get("uses") == "actions/checkout@v4":
                ci_chain.repository(workspace, expected)
                continue
            if "run" in step:
                workspace.mkdir(exist_ok=True)
                out = jobdir / f"output-{uuid.uuid4().hex}"
                out.touch()
                script = jobdir / f"step-{uuid.uuid4().hex}.sh"
                script.write_text(step["run"])
                proc = subprocess.run(
                    ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=workspace,
                    env={"PATH": ":".join(SYSTEM_PATH), "HOME": os.environ.get("HOME", "/root"), "GITHUB_ACTIONS": "true",
                         "GITHUB_OUTPUT": str(out), "GITHUB_ENV": str(jobdir / "env"),
                         "GITHUB_STEP_SUMMARY": str(summary), **env},
                    capture_output=True, text=True, timeout=120, check=False)
                log += proc.stdout + proc.stderr
                outputs, ok = parse_outputs(out.read_text()), proc.returncode == 0
            else:
                assert step["uses"] == ACTION_REF, step  # the action: this checkout's action.yml
                with_ = {k: evaluate(str(v), ctx) for k, v in step["with"].items()}
                run = run_action(with_, jobdir, runner_temp, extra_env=env, steps=slice(1, None), path=installed)
                log += run.stdout + run.stderr
                summary.write_text(summary.read_text() + run.summary)
                outputs, ok = run.outputs, run.returncode == 0
            if step.get("id"):
                ctx["steps"].update({f"{step['id']}.outputs.{k}": v for k, v in outputs.items()})
            if not ok:
                result = "failure"
                break
        flow.results[name], flow.logs[name], flow.summaries[name] = result, log, summary.read_text()
        flow.seconds[name] = round(time.monotonic() - started, 1)
        (jobdir / "log.txt").write_text(log)  # kept with pytest's tmp dirs, to read after a failure
        flow.outputs[name] = {k: evaluate(str(v), ctx) for k, v in (job.get("outputs") or {}).items()}
        ctx["needs"].update({f"{name}.outputs.{k}": v for k, v in flow.outputs[name].items()})
        # a job's state dir is the runner's, gone with the job: what is shared is the database
        assert not list((jobdir / "state").glob("**/*.sqlite")), f"job {name} used an embedded store"
        shutil.rmtree(jobdir / "state", ignore_errors=True)
    return flow


def test_rendered_workflow_takes_an_mlflow_version_to_production_and_a_wrong_answer_stops_in_staging(
        mlflow, service, database_url, proxy_dir, runner_temp, installed, docker_client, tmp_path):
    tracking_uri, model = mlflow
    expected = json.loads((ci_chain.EXAMPLE / "expected.json").read_text())
    settings = ci_chain.pipeline_settings(service, unused_port(), unused_port())
    repo_secrets = {"PIPELINE_PLUGIN_DATABASE_URL": database_url}
    # the runner host: its folder for stable addresses; pip may reach the index for the wheelhouse
    runner_env = {"PIPELINE_PLUGIN_PROXY_DIR": str(proxy_dir), "PIP_NO_INDEX": "false"}

    def workflow(version: str) -> dict:
        text = render_pipeline("github", ci_chain.mlflow_event(model, version, tracking_uri), "deploy-churn",
                               {"provider": "github", **settings}).text
        return yaml.safe_load(text)

    # 1. version 1: every job passes; production answers with the model and MLflow says so
    run1 = run_workflow(workflow("1"), repo_secrets, {}, expected, tmp_path / "run1", runner_temp, installed, runner_env)
    assert run1.results == {"package": "success", "deploy-staging": "success", "smoke-test": "success",
                            "promote": "success", "rollback": "skipped", "summary": "success"}, run1.explain()
    assert f"fetching models:/{model}/1 from MLflow" in run1.logs["package"], run1.explain()
    assert run1.outputs["package"]["image"] == f"localhost:5000/{service}/{model}:1"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", run1.outputs["package"]["digest"]), run1.outputs
    staging_uri, production_uri = run1.outputs["deploy-staging"]["scoring-uri"], run1.outputs["promote"]["scoring-uri"]
    assert f":{settings['staging_port']}/" in staging_uri and f":{settings['production_port']}/" in production_uri
    ci_chain.assert_close(ci_chain.score(production_uri), expected)
    assert ci_chain.production_alias(tracking_uri, model) == "1"  # the promotion wrote back to MLflow
    assert ci_chain.serves(service, database_url, tmp_path) == {"staging": "1", "production": "1"}
    assert ci_chain.serving(docker_client, service, "production") == {"1"}
    assert "### Promotion" in run1.summaries["promote"] and "promoted" in run1.summaries["promote"]
    # the action masks the URL and its password before anything runs; nothing prints them otherwise
    log = [line for line in "".join(run1.logs.values()).splitlines() if not line.startswith("::add-mask::")]
    assert "::add-mask::" + database_url in run1.logs["package"]
    assert not [line for line in log if ci_chain.POSTGRES_PASSWORD in line]
    print("version 1 jobs (s):", run1.seconds)

    # 2. version 2 with an expected output it does not give: stops at the staging smoke test
    wrong = {**expected, "predictions": [1 - p for p in expected["predictions"]]}
    run2 = run_workflow(workflow("2"), repo_secrets, {}, wrong, tmp_path / "run2", runner_temp, installed, runner_env)
    assert run2.results == {"package": "success", "deploy-staging": "success", "smoke-test": "failure",
                            "promote": "skipped", "rollback": "skipped", "summary": "success"}, run2.explain()
    assert "predictions" in run2.logs["smoke-test"], run2.explain()
    assert any(line.startswith("::error") for line in run2.logs["smoke-test"].splitlines()), run2.explain()
    assert ci_chain.serving(docker_client, service, "staging") == {"2"}
    assert ci_chain.serves(service, database_url, tmp_path) == {"staging": "2", "production": "1"}
    assert ci_chain.production_alias(tracking_uri, model) == "1"
    assert ci_chain.serving(docker_client, service, "production") == {"1"}
    ci_chain.assert_close(ci_chain.score(production_uri), expected)
    print("version 2 jobs (s):", run2.seconds)
