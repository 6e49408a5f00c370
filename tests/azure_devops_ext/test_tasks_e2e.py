"""The extension's tasks run the way the Azure Pipelines agent runs them, through a release's
stages: package -> deploy (staging) -> smoke test -> promote (production, held for approval) ->
approve, then the failure hook's rollback and a delete, on real Docker, for a model version
registered in a real MLflow server.

Each task is `node index.js` in its folder of the unpacked .vsix (the task library's real code), its
own process with its own agent temp dir, sources dir and empty state dir; its inputs arrive as
`INPUT_*` variables, the MLflow service connection as the agent's `ENDPOINT_*` variables, the
agent's `TF_BUILD`, `AGENT_*`, `SYSTEM_*` and `RELEASE_*` variables are set; the Python of the job
(what UsePythonVersion puts on PATH) sees this checkout installed, so the task's pinned
`pip install pipeline-plugin[...]==VERSION` is satisfied offline. What the stages share is the
database URL (a secret, one PostgreSQL database) and the agent's host. Output variables, the
summary uploads, the JUnit publish and the masking of every secret are read from what the task
printed, as the agent reads them.
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
import requests
from conftest import unused_port

from pipeline_plugin import __version__
from tests import ci_chain
from tests.action import test_action
from tests.action.test_action import SYSTEM_PATH
from tests.ci_chain import database_url, proxy_dir  # noqa: F401 - the chain's module fixtures

pytestmark = [pytest.mark.docker, pytest.mark.mlflow, pytest.mark.slow]

# a Python with this checkout pip-installed (tests/action/test_action.py), the job's UsePythonVersion
runner_temp, installed = test_action.runner_temp, test_action.installed

VSO = re.compile(r"^##vso\[([\w.]+)((?: [^\]]*)?)\](.*)$")
CONNECTION = "5b0c6c1e-8d1b-4a53-9a53-0c3a8e0f7a11"  # the service connection's id, as the agent names it


def unescape(value: str) -> str:
    for escaped, char in (("%0D", "\r"), ("%0A", "\n"), ("%5D", "]"), ("%3B", ";"), ("%AZP25", "%")):
        value = value.replace(escaped, char)
    return value


@dataclass
class TaskRun:
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str] = field(default_factory=dict)  # isOutput=true variables
    masked: list[str] = field(default_factory=list)  # ##vso[task.setsecret] values
    summaries: list[str] = field(default_factory=list)  # uploaded Markdown
    published: list[dict[str, str]] = field(default_factory=list)  # results.publish properties
    result: str = ""  # task.complete result
    message: str = ""
    seconds: float = 0.0

    def explain(self) -> str:
        return f"exit {self.returncode} result {self.result}: {self.message}\n{self.stdout[-6000:]}\n{self.stderr[-3000:]}"


def parse(run: TaskRun) -> TaskRun:
    for line in run.stdout.splitlines():
        m = VSO.match(line)
        if not m:
            continue
        command, props, value = m.group(1), dict(p.split("=", 1) for p in m.group(2).strip().split(";") if "=" in p), m.group(3)
        if command == "task.setvariable" and props.get("isOutput", "").lower() == "true":
            run.outputs[props["variable"]] = unescape(value)
        elif command == "task.setsecret":
            run.masked.append(unescape(value))
        elif command == "task.uploadsummary":
            run.summaries.append(Path(unescape(value)).read_text())
        elif command == "results.publish":
            run.published.append({k: unescape(v) for k, v in props.items()})
        elif command == "task.complete":
            run.result, run.message = props.get("result", ""), unescape(value)
    return run


def run_task(unpacked: Path, task: str, inputs: dict[str, str], jobdir: Path, venv_bin: str, expected: dict,
             agent_env: dict[str, str], endpoint: dict[str, str] | None = None) -> TaskRun:
    """One agent job running one task: fresh sources (the checkout), temp and state dirs."""
    sources, temp = jobdir / "s", jobdir / "tmp"
    ci_chain.repository(sources, expected)
    temp.mkdir(parents=True)
    env = {
        "HOME": os.environ.get("HOME", "/root"), "PATH": ":".join([venv_bin, *SYSTEM_PATH]),
        "TF_BUILD": "True", "AGENT_TEMPDIRECTORY": str(temp), "AGENT_WORKFOLDER": str(jobdir),
        "AGENT_TOOLSDIRECTORY": str(jobdir / "_tool"), "SYSTEM_DEFAULTWORKINGDIRECTORY": str(sources),
        "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI": "https://dev.azure.com/acme/", "SYSTEM_TEAMPROJECT": "ml",
        "SYSTEM_HOSTTYPE": "release", "RELEASE_RELEASEID": "42", "RELEASE_ENVIRONMENTNAME": jobdir.name,
        "PIPELINE_PLUGIN_STATE_DIR": str(jobdir / "state"),  # fresh and empty for every job
        "PIP_NO_INDEX": "1",  # offline: the pinned version is the one installed
        **agent_env,
        # the task's inputs, named as the agent names them (filePath inputs rooted in the sources)
        **{f"INPUT_{k.upper()}": v for k, v in inputs.items()},
    }
    if endpoint:
        env.update({f"ENDPOINT_URL_{CONNECTION}": endpoint["url"], f"ENDPOINT_AUTH_SCHEME_{CONNECTION}": "Token",
                    f"ENDPOINT_AUTH_{CONNECTION}": json.dumps({"parameters": {"apitoken": endpoint["token"]}, "scheme": "Token"}),
                    f"ENDPOINT_AUTH_PARAMETER_{CONNECTION}_APITOKEN": endpoint["token"], "INPUT_MLFLOWCONNECTION": CONNECTION})
    # the agent passes every input: the pipeline's value, else the task.json default
    meta = json.loads((unpacked / "tasks" / task / "task.json").read_text())
    for inp in meta["inputs"]:
        assert inp["name"] in inputs or not inp["required"], f"{task}: required input {inp['name']} missing"
        env.setdefault(f"INPUT_{inp['name'].upper()}", str(inp.get("defaultValue", "")))
    started = time.monotonic()
    proc = subprocess.run(["node", str(unpacked / "tasks" / task / "index.js")], cwd=sources, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    (jobdir / "log.txt").write_text(proc.stdout + proc.stderr)  # kept with pytest's tmp dirs
    run = parse(TaskRun(proc.returncode, proc.stdout, proc.stderr, seconds=round(time.monotonic() - started, 1)))
    if "databaseUrl" in inputs:  # the job's state dir goes with the agent: what is shared is the database
        assert not list((jobdir / "state").glob("**/*.sqlite")), f"{task} used an embedded store"
    return run


@pytest.fixture(scope="module")
def service(docker_client, base_image) -> str:
    return f"azx-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory, service):
    name = f"churn-{service}"
    with ci_chain.mlflow_with_versions(tmp_path_factory.mktemp("mlflow"), name, versions=1) as url:
        yield url, name


def assert_secrets_hidden(run: TaskRun, task: str, *values: str) -> None:
    """Each secret is masked before anything else could print it, and appears nowhere else."""
    for value in values:
        assert value in run.masked, f"{task} did not mask a secret (##vso[task.setsecret])"
        leaks = [line for line in (run.stdout + run.stderr).splitlines()
                 if value in line and not line.startswith("##vso[task.setsecret]")]
        assert not leaks, f"{task} printed a secret: {leaks[0][:200]}"
    assert not [line for line in (run.stdout + run.stderr).splitlines()
                if ci_chain.POSTGRES_PASSWORD in line and not line.startswith("##vso[task.setsecret]")]


def test_tasks_take_an_mlflow_version_through_package_deploy_smoke_test_and_promote(
        unpacked, mlflow, service, database_url, proxy_dir, installed, docker_client, tmp_path):
    tracking_uri, model = mlflow
    expected = json.loads((ci_chain.EXAMPLE / "expected.json").read_text())
    sample = json.loads((ci_chain.EXAMPLE / "sample.json").read_text())
    staging_port, production_port = unused_port(), unused_port()
    token, key = f"mlflow-{secrets.token_hex(8)}", f"key-{secrets.token_hex(8)}"
    endpoint = {"url": tracking_uri, "token": token}
    common = dict(venv_bin=installed[0], expected=expected, agent_env={"PIPELINE_PLUGIN_PROXY_DIR": str(proxy_dir)})
    store = {"databaseUrl": database_url}
    pinned = f"pipeline-plugin[mlflow,postgres]=={__version__}"  # what the tasks install by default
    seconds = {}

    # 1. package: models:/NAME/1 fetched through the service connection
    jobdir = tmp_path / "package"
    src = jobdir / "s"
    pkg = run_task(unpacked, "PipelinePluginPackage", {
        "modelName": model, "modelVersion": "1", "modelSource": "mlflow", "imageRepository": f"localhost:5000/{service}",
        "entryScript": str(src / "score.py"), "requirements": str(src / "requirements.txt"), **store,
    }, jobdir, endpoint=endpoint, **common)
    seconds["package"] = pkg.seconds
    assert pkg.returncode == 0 and pkg.result == "Succeeded", pkg.explain()
    assert f"fetching models:/{model}/1 from MLflow" in pkg.stdout + pkg.stderr, pkg.explain()
    # the job's Python already has the extension's exact version: no pip install
    assert f"pipeline-plugin {__version__} is already installed" in pkg.stdout, pkg.explain()
    image = f"localhost:5000/{service}/{model}:1"
    assert pkg.outputs["image"] == image, pkg.outputs
    assert pkg.outputs["digest"].startswith("sha256:"), pkg.outputs
    assert docker_client.images.get(image).id == pkg.outputs["digest"]
    assert any("Packaged model image" in s and pkg.outputs["digest"] in s for s in pkg.summaries), pkg.summaries
    assert_secrets_hidden(pkg, "package", database_url, token)

    # 2. deploy to staging, the image from the package task's output variable
    dep = run_task(unpacked, "PipelinePluginDeploy", {
        "image": pkg.outputs["image"], "serviceName": service, "environment": "staging", "target": "docker",
        "port": str(staging_port), **store}, tmp_path / "staging", **common)
    seconds["deploy"] = dep.seconds
    assert dep.returncode == 0 and dep.result == "Succeeded", dep.explain()
    assert f":{staging_port}/" in dep.outputs["scoringUri"], dep.outputs
    assert dep.outputs["image"] == image and dep.outputs["digest"] == pkg.outputs["digest"], dep.outputs
    ci_chain.assert_close(ci_chain.score(dep.outputs["scoringUri"]), expected)
    assert any("Deployed: staging" in s for s in dep.summaries), dep.summaries
    assert_secrets_hidden(dep, "deploy", database_url)

    # 3. smoke test staging: the JUnit report is published as a test run, the pass recorded for promote
    jobdir = tmp_path / "smoke"
    smoke = run_task(unpacked, "PipelinePluginSmokeTest", {
        "scoringUri": dep.outputs["scoringUri"], "sample": str(jobdir / "s" / "sample.json"),
        "expect": str(jobdir / "s" / "expected.json"), "serviceName": service, "environment": "staging",
        "scoringKey": key, "pluginSpec": pinned, **store}, jobdir, **common)
    seconds["smoke-test"] = smoke.seconds
    assert smoke.returncode == 0 and smoke.result == "Succeeded", smoke.explain()
    assert smoke.outputs["smokeTest"] == "passed", smoke.outputs
    assert f"[command]{installed[0]}/python3 -m pip install --disable-pip-version-check --quiet {pinned}" in smoke.stdout
    [published] = smoke.published
    assert published["type"] == "JUnit" and published["resultFiles"] == smoke.outputs["junitFile"], published
    cases = list(ET.parse(published["resultFiles"]).getroot().iter("testcase"))
    assert cases and not [c for c in cases if c.find("failure") is not None]
    assert any("Smoke test" in s and "passed" in s for s in smoke.summaries), smoke.summaries
    assert_secrets_hidden(smoke, "smoke-test", database_url, key)

    # 4. promote to production, held for approval in the shared store under the release's run id
    run_id = f"release-42-{service}"
    held = run_task(unpacked, "PipelinePluginPromote", {
        "serviceName": service, "port": str(production_port), "target": "docker", "scoringKey": key,
        "requireApproval": "true", "runId": run_id, **store,
    }, tmp_path / "production", endpoint=endpoint, **common)
    seconds["promote"] = held.seconds
    assert held.returncode == 0 and held.result == "Succeeded", held.explain()
    assert held.outputs["status"] == "pending-approval" and held.outputs["runId"] == run_id, held.outputs
    assert run_id in held.message, held.message
    assert "production" not in ci_chain.serves(service, database_url, tmp_path)
    assert_secrets_hidden(held, "promote", database_url, token, key)

    # 4b. the Approve task of a later stage, on another agent, carries it out and writes it back to
    # MLflow through the service connection
    promo = run_task(unpacked, "PipelinePluginApprove", {
        "runId": run_id, "approver": "release-approver@acme.example", "scoringKey": key, **store,
    }, tmp_path / "approve", endpoint=endpoint, **common)
    seconds["approve"] = promo.seconds
    assert promo.returncode == 0 and promo.result == "Succeeded", promo.explain()
    assert f":{production_port}/" in promo.outputs["scoringUri"], promo.outputs
    assert promo.outputs["digest"] == promo.outputs["image"] == pkg.outputs["digest"], promo.outputs
    assert promo.outputs["status"] == "promoted", promo.outputs
    # production now wants the production scoring key the promote task was given
    assert requests.post(promo.outputs["scoringUri"], json=sample, timeout=30).status_code == 401
    answer = requests.post(promo.outputs["scoringUri"], json=sample, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    ci_chain.assert_close(answer.json(), expected)
    assert ci_chain.production_alias(tracking_uri, model) == "1"
    assert ci_chain.serves(service, database_url, tmp_path) == {"staging": "1", "production": "1"}
    assert any("Promotion: production" in s for s in promo.summaries), promo.summaries
    assert_secrets_hidden(promo, "approve", database_url, token, key)

    # 5. the failure hook's rollback (only if production serves a version that is not there) changes nothing
    back = run_task(unpacked, "PipelinePluginRollback", {
        "serviceName": service, "environment": "production", "ifServing": "2", "scoringKey": key, **store,
    }, tmp_path / "rollback", endpoint=endpoint, **common)
    seconds["rollback"] = back.seconds
    assert back.returncode == 0 and back.result == "Succeeded", back.explain()
    assert back.outputs["status"] == "unchanged", back.outputs
    assert ci_chain.serves(service, database_url, tmp_path) == {"staging": "1", "production": "1"}
    assert_secrets_hidden(back, "rollback", database_url, token, key)

    # 6. delete staging from yet another job: the shared store knows what runs there
    gone = run_task(unpacked, "PipelinePluginDelete", {
        "serviceName": service, "environment": "staging", **store}, tmp_path / "delete", **common)
    seconds["delete"] = gone.seconds
    assert gone.returncode == 0 and gone.result == "Succeeded", gone.explain()
    assert gone.outputs["status"] == "deleted", gone.outputs
    assert ci_chain.serving(docker_client, service, "staging") == set()
    assert ci_chain.serving(docker_client, service, "production") == {"1"}
    assert_secrets_hidden(gone, "delete", database_url)
    print("task seconds:", seconds)


def test_a_failed_smoke_test_fails_the_task_and_publishes_the_failed_checks(
        unpacked, installed, tmp_path, free_port):
    """No service answers: the task fails with the tool's reason, still publishes its JUnit report,
    and its output variable says failed."""
    jobdir = tmp_path / "smoke"
    run = run_task(unpacked, "PipelinePluginSmokeTest", {
        "scoringUri": f"http://127.0.0.1:{free_port}/score", "sample": str(jobdir / "s" / "sample.json"),
        "requests": "2"}, jobdir, venv_bin=installed[0],
        expected=json.loads((ci_chain.EXAMPLE / "expected.json").read_text()), agent_env={})
    assert run.result == "Failed", run.explain()
    assert run.message.startswith("smoke test of http://127.0.0.1:"), run.message
    assert run.outputs["smokeTest"] == "failed"
    [published] = run.published
    cases = list(ET.parse(published["resultFiles"]).getroot().iter("testcase"))
    assert [c for c in cases if c.find("failure") is not None], "the JUnit report shows no failed check"


def test_the_task_installs_the_extension_s_version_and_names_the_input_when_pip_fails(unpacked, tmp_path):
    """A Python without pipeline-plugin (and here without pip, as on an agent with no package
    index): the task asks pip for the pinned version and fails naming the input to change."""
    venv = tmp_path / "bare"
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    run = run_task(unpacked, "PipelinePluginDelete", {"serviceName": "nothing", "environment": "staging",
                   "pythonPath": str(venv / "bin" / "python3")}, tmp_path / "job", venv_bin=str(venv / "bin"),
                   expected={}, agent_env={})
    pinned = f"pipeline-plugin[mlflow,postgres]=={__version__}"
    assert run.result == "Failed", run.explain()
    assert run.message.startswith(f"pip install {pinned} failed") and "'pluginSpec'" in run.message, run.message
