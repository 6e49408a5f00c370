"""The rendered Azure Pipelines YAML, run stage by stage the way a self-hosted agent runs it, with the
real pipeline-plugin on real Docker, for a model version registered in a real MLflow server.

Each stage's job gets a fresh sources directory (what `checkout: self` puts there: the example's
scoring code), a fresh Agent.TempDirectory and a fresh empty state dir. Its steps run as the agent
runs them: `bash:` steps with `TF_BUILD=True`, the pipeline's non-secret variables in the
environment, and the `env:` mapping the step declares (`${{ parameters.x }}` from the parameter
defaults dispatch sends, `$(NAME)` macros from the variables, left as they are when undefined); the
install step runs the template's own `pip install "$PLUGIN_SPEC"` (the exact version that rendered
it, found installed offline); `##vso[task.setvariable ...;isOutput=true]` lines become output
variables that the next stage reads through its `$[ stageDependencies... ]` variables. Stages run
when the stages they depend on succeeded; a deployment job's `on: failure` steps run when its
deploy steps failed. What the stages share is the secret variable PIPELINE_PLUGIN_DATABASE_URL
(one PostgreSQL database) and the agent's host.

Version 1 goes package (models:/NAME/1 fetched from MLflow) -> staging -> smoke_test -> production,
and MLflow's `production` alias then names it. Version 2, whose answer differs from the
repository's expected output, stops at the smoke test while production keeps serving version 1.
Version 3 fails only in production: promote rolls back and the `on: failure` hook runs on its own.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import unused_port

from pipeline_plugin import __version__
from pipeline_plugin.render import render_pipeline
from tests import ci_chain
from tests.action import test_action
from tests.action.test_action import SYSTEM_PATH
from tests.ci_chain import database_url, proxy_dir  # noqa: F401 - the chain's module fixtures
from tests.render.test_ci_settings import azure_env

pytestmark = [pytest.mark.docker, pytest.mark.mlflow, pytest.mark.slow]

# the action's install step, run once: this checkout pip-installed into a venv (tests/action/test_action.py)
runner_temp, installed = test_action.runner_temp, test_action.installed

SETVARIABLE = re.compile(r"^##vso\[task\.setvariable variable=([^;\]]+)((?:;[^\]]*)?)\](.*)$")
STAGE_OUTPUT = re.compile(r"^\$\[\s*stageDependencies\.(\w+)\.(\w+)\.outputs\['([\w.]+)'\]\s*\]$")


@pytest.fixture(scope="module")
def service(docker_client, base_image) -> str:
    return f"az-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory, service):
    name = f"churn-{service}"
    with ci_chain.mlflow_with_versions(tmp_path_factory.mktemp("mlflow"), name, versions=3) as url:
        yield url, name


def unescape_vso(value: str) -> str:
    for escaped, char in (("%0D", "\r"), ("%0A", "\n"), ("%5D", "]"), ("%3B", ";"), ("%AZP25", "%")):
        value = value.replace(escaped, char)
    return value


@dataclass
class Pipeline:
    results: dict[str, str] = field(default_factory=dict)  # stage -> succeeded | failed | skipped
    outputs: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # (stage, job) -> outputs
    logs: dict[str, str] = field(default_factory=dict)
    junit: dict[str, ET.Element] = field(default_factory=dict)  # what PublishTestResults@2 published
    seconds: dict[str, float] = field(default_factory=dict)
    hooks: dict[str, bool] = field(default_factory=dict)  # stage -> its `on: failure` hook passed

    def explain(self) -> str:
        logs = (f"==== {stage}: {self.results.get(stage)}\n{log[-4000:]}" for stage, log in self.logs.items())
        return f"{self.results} hooks {self.hooks}\n" + "\n".join(logs)


def run_job(steps: list[dict], jobdir: Path, *, stage: str, job: dict, params: dict[str, str],
            variables: dict[str, str], secret_variables: dict[str, str], expected: dict, venv_bin: str,
            agent_env: dict[str, str], outputs: dict[str, str], flow: Pipeline,
            score_py: str | None = None) -> tuple[bool, str]:
    """One agent job: a fresh sources dir, temp dir and state dir; steps run while nothing failed
    (or when their condition says so). Output variables go to ``outputs``; returns (ok, log)."""
    job_name = job.get("job") or job["deployment"]
    sources, temp = jobdir / "s", jobdir / "tmp"
    sources.mkdir(parents=True)
    temp.mkdir()
    env_base = {
        "HOME": os.environ.get("HOME", "/root"), "PATH": ":".join(SYSTEM_PATH),
        "TF_BUILD": "True", "AGENT_TEMPDIRECTORY": str(temp), "BUILD_SOURCESDIRECTORY": str(sources),
        "SYSTEM_DEFAULTWORKINGDIRECTORY": str(sources),
        "PIPELINE_PLUGIN_STATE_DIR": str(jobdir / "state"),  # fresh and empty for every job
        **agent_env,
        # the pipeline's non-secret variables, as environment variables (secrets are not)
        **{k.upper().replace(".", "_"): v for k, v in variables.items()},
    }
    macros = {**variables, **secret_variables, "Agent.TempDirectory": str(temp)}
    ok, log = True, ""
    for step in steps:
        if not ok and step.get("condition", "succeeded()") not in ("succeededOrFailed()", "always()"):
            continue
        if "checkout" in step:
            ci_chain.repository(sources, expected, score_py)
        elif step.get("task", "").startswith("UsePythonVersion@"):
            env_base["PATH"] = f"{venv_bin}:{env_base['PATH']}"  # the agent's Python, with pip
        elif step.get("task", "").startswith("PublishTestResults@"):
            files = step["inputs"]["testResultsFiles"].replace("$(Agent.TempDirectory)", str(temp))
            flow.junit[stage] = ET.parse(files).getroot()
        else:
            assert set(step) >= {"bash"}, f"a step this emulation does not know: {step}"
            env = {**env_base, **{k: azure_env(str(v), params, macros) for k, v in (step.get("env") or {}).items()}}
            script = jobdir / f"step-{uuid.uuid4().hex}.sh"
            script.write_text(step["bash"])
            proc = subprocess.run(["bash", "--noprofile", "--norc", str(script)], cwd=sources, env=env,
                                  capture_output=True, text=True, timeout=300, check=False)
            log += f"---- {step.get('displayName')}\n{proc.stdout}{proc.stderr}"
            for line in proc.stdout.splitlines():
                m = SETVARIABLE.match(line)
                if m and "isoutput=true" in m.group(2).lower():
                    key = f"{step['name']}.{m.group(1)}"
                    outputs[f"{job_name}.{key}" if "deployment" in job else key] = unescape_vso(m.group(3))
            ok = ok and proc.returncode == 0
    (jobdir / "log.txt").write_text(log)  # kept with pytest's tmp dirs, to read after a failure
    # the job's state dir went with the agent's work folder: what is shared is the database
    assert not list((jobdir / "state").glob("**/*.sqlite")), f"stage {stage} used an embedded store"
    return ok, log


def run_pipeline(doc: dict, secret_variables: dict[str, str], expected: dict, workdir: Path, venv_bin: str,
                 agent_env: dict[str, str], score_py: str | None = None) -> Pipeline:
    params = {p["name"]: str(p["default"]) for p in doc["parameters"]}
    pipeline_vars = {v["name"]: str(v["value"]) for v in doc.get("variables") or []}
    flow = Pipeline()
    previous = None
    for stage in doc["stages"]:
        name = stage["stage"]
        depends = stage.get("dependsOn", [previous] if previous else [])
        depends = [depends] if isinstance(depends, str) else depends
        previous = name
        if any(flow.results[d] != "succeeded" for d in depends):
            flow.results[name] = "skipped"
            continue
        started = time.monotonic()
        variables = dict(pipeline_vars)
        for var in stage.get("variables") or []:
            m = STAGE_OUTPUT.fullmatch(str(var["value"]).strip())
            assert m, f"a stage variable this emulation does not know: {var}"
            variables[var["name"]] = flow.outputs.get((m.group(1), m.group(2)), {}).get(m.group(3), "")
        log, result = "", "succeeded"
        for job in stage["jobs"]:
            job_name = job.get("job") or job["deployment"]
            if "deployment" in job:
                run_once = job["strategy"]["runOnce"]
                on = run_once.get(True) or run_once.get("on") or {}  # YAML 1.1 reads the key `on` as true
                steps, on_failure = run_once["deploy"]["steps"], on.get("failure", {}).get("steps", [])
            else:
                steps, on_failure = job["steps"], []
            outputs: dict[str, str] = {}
            ok, out = run_job(steps, workdir / name / job_name, stage=name, job=job, params=params, variables=variables,
                              secret_variables=secret_variables, expected=expected, venv_bin=venv_bin,
                              agent_env=agent_env, outputs=outputs, flow=flow, score_py=score_py)
            log += out
            if not ok and on_failure:  # a lifecycle hook runs as a job of its own (a fresh agent job)
                flow.hooks[name], out = run_job(
                    on_failure, workdir / name / f"{job_name}-on-failure", stage=name, job=job, params=params,
                    variables=variables, secret_variables=secret_variables, expected=expected, venv_bin=venv_bin,
                    agent_env=agent_env, outputs={}, flow=flow, score_py=score_py)
                log += out
            flow.outputs[(name, job_name)] = outputs
            if not ok:
                result = "failed"
        flow.results[name], flow.logs[name] = result, log
        flow.seconds[name] = round(time.monotonic() - started, 1)
    return flow


def test_azure_stage_scripts_take_an_mlflow_version_to_production_and_a_wrong_answer_stops_in_staging(
        mlflow, service, database_url, proxy_dir, installed, docker_client, tmp_path):
    tracking_uri, model = mlflow
    expected = json.loads((ci_chain.EXAMPLE / "expected.json").read_text())
    settings = ci_chain.pipeline_settings(service, unused_port(), unused_port())
    secret_variables = {"PIPELINE_PLUGIN_DATABASE_URL": database_url}
    agent_env = {"PIPELINE_PLUGIN_PROXY_DIR": str(proxy_dir)}

    def pipeline(version: str) -> dict:
        text = render_pipeline("azure-pipelines", ci_chain.mlflow_event(model, version, tracking_uri), "deploy-churn",
                               {"provider": "azure-devops", "project": "ml", "pipeline_id": 7, **settings}).text
        return yaml.safe_load(text)

    # 1. version 1: every stage passes; production answers with the model and MLflow says so
    doc = pipeline("1")
    assert f"=={__version__}" in json.dumps(doc)  # the install step pins the version that rendered it
    run1 = run_pipeline(doc, secret_variables, expected, tmp_path / "run1", installed[0], agent_env)
    assert run1.results == {"package": "succeeded", "staging": "succeeded", "smoke_test": "succeeded",
                            "production": "succeeded"}, run1.explain()
    assert f"fetching models:/{model}/1 from MLflow" in run1.logs["package"], run1.explain()
    assert run1.outputs[("package", "package")]["package.image"] == f"localhost:5000/{service}/{model}:1"
    staging_uri = run1.outputs[("staging", "deploy_staging")]["deploy_staging.deploy.scoring_uri"]
    assert f":{settings['staging_port']}/" in staging_uri, run1.outputs
    assert list(run1.junit["smoke_test"].iter("testcase")), "no JUnit report for PublishTestResults"
    production_uri = run1.outputs[("production", "promote")]["promote.promote.scoring_uri"]
    assert f":{settings['production_port']}/" in production_uri, run1.outputs
    ci_chain.assert_close(ci_chain.score(production_uri), expected)
    assert ci_chain.production_alias(tracking_uri, model) == "1"  # the promotion wrote back to MLflow
    assert ci_chain.serves(service, database_url, tmp_path) == {"staging": "1", "production": "1"}
    assert ci_chain.serving(docker_client, service, "production") == {"1"}
    assert not [line for line in "".join(run1.logs.values()).splitlines() if ci_chain.POSTGRES_PASSWORD in line]
    print("version 1 stages (s):", run1.seconds)

    # 2. version 2 with an expected output it does not give: stops at the staging smoke test
    wrong = {**expected, "predictions": [1 - p for p in expected["predictions"]]}
    run2 = run_pipeline(pipeline("2"), secret_variables, wrong, tmp_path / "run2", installed[0], agent_env)
    assert run2.results == {"package": "succeeded", "staging": "succeeded", "smoke_test": "failed",
                            "production": "skipped"}, run2.explain()
    assert any(line.startswith("##vso[task.logissue type=error]") and "predictions" in line
               for line in run2.logs["smoke_test"].splitlines()), run2.explain()
    failures = [c for c in run2.junit["smoke_test"].iter("testcase") if c.find("failure") is not None]
    assert failures, "the published JUnit report shows no failed check"
    assert ci_chain.serving(docker_client, service, "staging") == {"2"}
    assert ci_chain.serves(service, database_url, tmp_path) == {"staging": "2", "production": "1"}
    assert ci_chain.production_alias(tracking_uri, model) == "1"
    assert ci_chain.serving(docker_client, service, "production") == {"1"}
    ci_chain.assert_close(ci_chain.score(production_uri), expected)
    print("version 2 stages (s):", run2.seconds)

    # 3. version 3 (a change to score.py) passes staging but fails in production: promote rolls back
    # itself; the `on: failure` hook, an agent job of its own, sets up Python, installs the tool and
    # runs `rollback --if-serving 3`, which leaves version 1 serving
    run3 = run_pipeline(pipeline("3"), secret_variables, expected, tmp_path / "run3", installed[0], agent_env,
                        score_py=ci_chain.fails_in_production())
    assert run3.results == {"package": "succeeded", "staging": "succeeded", "smoke_test": "succeeded",
                            "production": "failed"}, run3.explain()
    assert run3.hooks == {"production": True}, run3.explain()
    assert "Roll back production" in run3.logs["production"] and "promotion failed" in run3.logs["production"]
    assert ci_chain.serves(service, database_url, tmp_path)["production"] == "1"
    assert ci_chain.production_alias(tracking_uri, model) == "1"
    ci_chain.assert_close(ci_chain.score(production_uri), expected)
    print("version 3 stages (s):", run3.seconds)
