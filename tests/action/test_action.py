"""The root action.yml, run the way the GitHub runner runs a composite action: each `run:` step with
`bash --noprofile --norc -eo pipefail`, its `env:` evaluated from the inputs, a fresh $GITHUB_OUTPUT per
step parsed into step outputs, $GITHUB_PATH applied to later steps, $GITHUB_STEP_SUMMARY kept.

The install step really runs `pip install "$GITHUB_ACTION_PATH"` (offline: the test's venv sees this
checkout's installed dependencies, build isolation off), so the later steps use the packaged
pipeline-plugin, templates included.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")

RULE = """\
name: deploy-iris
match:
  source: mlflow
  model: iris
pipeline:
  provider: github
  repository: acme/models
  workflow: deploy-model.yml
  service: iris
"""


SYSTEM_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]


@dataclass
class Run:
    returncode: int
    stdout: str = ""
    stderr: str = ""
    steps: dict[str, dict[str, str]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    summary: str = ""


def parse_outputs(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT as the runner reads it: name=value lines and name<<DELIM heredocs."""
    out, lines, i = {}, text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            j = lines.index(delim, i + 1)
            out[name] = "\n".join(lines[i + 1 : j])
            i = j + 1
            continue
        if "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


def evaluate(text: str, inputs: dict[str, str], steps: dict[str, dict[str, str]], github: dict[str, str] | None = None) -> str:
    def one(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr == "github.token":
            return (github or {}).get("token", "")
        if re.fullmatch(r"inputs\.[A-Za-z0-9_-]+", expr):
            return inputs[expr.split(".", 1)[1]]
        s = re.fullmatch(r"steps\.([A-Za-z0-9_-]+)\.outputs\.([A-Za-z0-9_-]+)", expr)
        if s:
            return steps.get(s.group(1), {}).get(s.group(2), "")
        raise AssertionError(f"action.yml uses an expression this runner emulation does not know: {expr}")

    return EXPR.sub(one, text)


@pytest.fixture(scope="module")
def runner_temp(tmp_path_factory):
    """RUNNER_TEMP with a venv that sees this checkout's dependencies (no network needed)."""
    temp = tmp_path_factory.mktemp("runner-temp")
    venv = temp / "pipeline-plugin-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    [site] = list(venv.glob("lib/python3*/site-packages"))
    (site / "zz-host-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return temp


def run_action(with_: dict[str, str], tmp_path: Path, runner_temp: Path, extra_env: dict[str, str] | None = None,
               steps: slice = slice(None), path: list[str] | None = None) -> Run:
    github = {"token": (extra_env or {}).get("GITHUB_TOKEN", "")}
    inputs = {name: evaluate(str(spec.get("default", "")), {}, {}, github) for name, spec in ACTION["inputs"].items()}
    for name, value in with_.items():
        assert name in ACTION["inputs"], f"action.yml has no input {name!r}"
        inputs[name] = value
    for name, spec in ACTION["inputs"].items():
        if spec.get("required"):
            assert inputs[name], f"required input {name} missing"
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    summary = tmp_path / f"summary-{uuid.uuid4().hex}.md"
    summary.touch()
    path = list(path or SYSTEM_PATH)
    result = Run(returncode=0)
    for step in ACTION["runs"]["steps"][steps]:
        step_output = tmp_path / f"output-{uuid.uuid4().hex}"
        step_path = tmp_path / f"path-{uuid.uuid4().hex}"
        step_output.touch()
        step_path.touch()
        env = {
            "HOME": os.environ.get("HOME", "/root"),
            "PATH": ":".join(path),
            "GITHUB_ACTIONS": "true",
            "CI": "true",
            "GITHUB_ACTION_PATH": str(ROOT),
            "GITHUB_WORKSPACE": str(workspace),
            "RUNNER_TEMP": str(runner_temp),
            "GITHUB_OUTPUT": str(step_output),
            "GITHUB_PATH": str(step_path),
            "GITHUB_ENV": str(tmp_path / "env"),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_REPOSITORY": "acme/models",
            "GITHUB_RUN_ID": "4242",
            "PIP_NO_INDEX": "1",
            "PIP_NO_BUILD_ISOLATION": "0",  # pip's spelling of --no-build-isolation
            "PIPELINE_PLUGIN_STATE_DIR": str(tmp_path / "state"),
            **(extra_env or {}),
        }
        for key, value in (step.get("env") or {}).items():
            env[key] = evaluate(str(value), inputs, result.steps)
        cwd = workspace / evaluate(step.get("working-directory", "."), inputs, result.steps)
        script = tmp_path / f"step-{uuid.uuid4().hex}.sh"
        script.write_text(step["run"])
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        result.stdout += proc.stdout
        result.stderr += proc.stderr
        if "id" in step:
            result.steps[step["id"]] = parse_outputs(step_output.read_text())
        path = [line for line in step_path.read_text().splitlines() if line] + path
        if proc.returncode != 0:
            result.returncode = proc.returncode
            break
    result.outputs = {name: evaluate(spec["value"], inputs, result.steps) for name, spec in ACTION["outputs"].items()}
    result.summary = summary.read_text()
    return result


@pytest.fixture(scope="module")
def installed(runner_temp, tmp_path_factory):
    """The install step, run once: pip installs this checkout and adds its venv to $GITHUB_PATH."""
    run = run_action({"stage": "render"}, tmp_path_factory.mktemp("install"), runner_temp, steps=slice(0, 1))
    assert run.returncode == 0, run.stderr
    venv_bin = runner_temp / "pipeline-plugin-venv" / "bin"
    assert (venv_bin / "pipeline-plugin").is_file()
    return [str(venv_bin), *SYSTEM_PATH]


def run_stage(with_: dict[str, str], tmp_path: Path, runner_temp: Path, installed: list[str], **kw) -> Run:
    """The steps after the install step, with the PATH it left."""
    return run_action(with_, tmp_path, runner_temp, steps=slice(1, None), path=installed, **kw)


def test_action_is_valid_for_github():
    check = Path(sys.executable).with_name("check-jsonschema")
    proc = subprocess.run([str(check), "--builtin-schema", "vendor.github-actions", str(ROOT / "action.yml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_inputs_reach_scripts_only_through_env():
    assert ACTION["runs"]["using"] == "composite"
    for step in ACTION["runs"]["steps"]:
        assert "${{" not in step["run"], f"step {step.get('name')} puts an expression into its script"
        for key, value in (step.get("env") or {}).items():
            m = re.fullmatch(r"\$\{\{ inputs\.([A-Za-z0-9_-]+) \}\}", str(value))
            assert m and m.group(1) in ACTION["inputs"], f"env {key}: {value}"
    stages = re.findall(r"^\s+([a-z-]+)\)$", ACTION["runs"]["steps"][-1]["run"], re.M)
    assert stages == ["package", "deploy", "smoke-test", "promote", "rollback", "delete", "render", "dispatch"]


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "workspace" / "triggers").mkdir(parents=True)
    (tmp_path / "workspace" / "triggers" / "iris.yml").write_text(RULE)
    (tmp_path / "workspace" / "event.json").write_text(json.dumps(
        {"source": "mlflow", "kind": "model_version.created", "model": "iris", "version": "12"}))
    return tmp_path


def test_render_stage_writes_outputs_and_summary(repo, runner_temp, installed):
    run = run_stage({"stage": "render", "provider": "github", "rule": "deploy-iris", "event": "event.json",
                      "output-dir": "out"}, repo, runner_temp, installed)
    assert run.returncode == 0, run.stderr
    written = repo / "workspace" / "out" / ".github" / "workflows" / "deploy-model.yml"
    assert run.outputs["pipeline-file"] == "out/.github/workflows/deploy-model.yml"
    doc = yaml.safe_load(written.read_text())
    assert doc[True]["workflow_dispatch"]["inputs"]["version"]["default"] == "12"
    assert "Rendered github pipeline" in run.summary and "`deploy-iris`" in run.summary
    assert run.outputs["scoring-uri"] == ""


@pytest.mark.parametrize("hostile", ['x"; touch PWNED; echo "', "$(touch PWNED)", "`touch PWNED`", "a\nb; touch PWNED"])
def test_hostile_inputs_stay_data(repo, runner_temp, installed, hostile):
    run = run_stage({"stage": "render", "provider": "github", "rule": hostile, "event": "event.json"},
                    repo, runner_temp, installed)
    assert run.returncode == 2
    assert not (repo / "workspace" / "PWNED").exists()
    [line] = [l for l in run.stdout.splitlines() if l.startswith("::error")]
    assert "no rule named" in line and "\n" not in line


def test_failures_become_error_annotations(repo, runner_temp, installed):
    run = run_stage({"stage": "render", "provider": "github", "rule": "deploy-iris", "event": "missing.json"},
                    repo, runner_temp, installed)
    assert run.returncode == 2
    assert any(l.startswith("::error::") and "missing.json" in l for l in run.stdout.splitlines())


def test_unknown_stage_and_missing_inputs_are_named(repo, runner_temp, installed):
    run = run_stage({"stage": "deploy-everything\n::add-mask::x"}, repo, runner_temp, installed)
    assert run.returncode == 2
    [line] = [l for l in run.stdout.splitlines() if l.startswith("::")]
    assert line.startswith("::error title=pipeline-plugin::input 'stage' is 'deploy-everything%0A::add-mask::x'")
    run = run_stage({"stage": "dispatch", "provider": "gitlab"}, repo, runner_temp, installed)
    assert run.returncode == 2 and "input 'rule' is required for stage 'dispatch'" in run.stdout


def test_dispatch_stage_reports_the_run_url(repo, runner_temp, installed):
    sys.path.insert(0, str(ROOT / "tests"))
    from contract_server import Contract, ContractServer, Reply

    (repo / "workspace" / "triggers" / "gl.yml").write_text(
        "name: deploy-iris-gitlab\nmatch:\n  model: iris\npipeline:\n  provider: gitlab\n  project: ml/models\n  ref: main\n")
    with ContractServer([Contract("gitlab.json")], auth=lambda r: r.header("PRIVATE-TOKEN") == "glpat-1") as server:
        server.on("postApiV4ProjectsIdPipeline", lambda req: Reply(201, {
            "id": 77, "status": "created", "ref": req.body["ref"], "web_url": f"{server.url}/ml/models/-/pipelines/77"}))
        run = run_stage({"stage": "dispatch", "provider": "gitlab", "rule": "deploy-iris-gitlab", "event": "event.json"},
                        repo, runner_temp, installed, extra_env={"CI_SERVER_URL": server.url, "GITLAB_TOKEN": "glpat-1"})
        assert run.returncode == 0, run.stderr + run.stdout
        assert run.outputs["run-url"] == f"{server.url}/ml/models/-/pipelines/77"
        assert "| version | `12` |" in run.summary
        [call] = server.calls("postApiV4ProjectsIdPipeline")
        assert {"key": "MODEL_VERSION", "value": "12"} in call.body["variables"]
        assert "glpat-1" not in run.stdout + run.stderr + run.summary
    server.assert_clean()


def test_deploy_stage_records_a_github_deployment_even_when_it_fails(repo, runner_temp, installed):
    sys.path.insert(0, str(ROOT / "tests"))
    from contract_server import Contract, ContractServer, Reply

    with ContractServer([Contract("github.json")], auth=lambda r: r.header("Authorization") == "Bearer ghs_x") as server:
        server.on("repos/create-deployment", lambda req: Reply(201, {"id": 31, "environment": req.body["environment"]}))
        server.on("repos/create-deployment-status", lambda req: Reply(201, {"id": 1, "state": req.body["state"]}))
        run = run_stage({"stage": "deploy", "image": "127.0.0.1:9/missing/iris:12", "service": "iris-gtest",
                         "environment": "staging", "target": "docker", "port": "39998",
                         "model-name": "iris", "model-version": "12"},
                        repo, runner_temp, installed,
                        extra_env={"GITHUB_TOKEN": "ghs_x", "GITHUB_API_URL": server.url, "GITHUB_SHA": "c" * 40})
        assert run.returncode == 4
        assert any(l.startswith("::error::image '127.0.0.1:9/missing/iris:12'") for l in run.stdout.splitlines())
        [deployment] = server.calls("repos/create-deployment")
        assert deployment.body["environment"] == "staging" and deployment.body["ref"] == "c" * 40
        assert deployment.body["payload"] == {"model": "iris", "version": "12", "service": "iris-gtest"}
        states = [c.body["state"] for c in server.calls("repos/create-deployment-status")]
        assert states == ["in_progress", "failure"]
        assert server.calls("repos/create-deployment-status")[1].body["log_url"] == "https://github.com/acme/models/actions/runs/4242"
        assert "ghs_x" not in run.stdout + run.stderr
        # the glance report in the job summary says what failed
        assert "### Deployed" in run.summary, run.stderr + run.stdout
        assert "| outcome | `failed: image '127.0.0.1:9/missing/iris:12'" in run.summary
        assert "| model | `iris` |" in run.summary and "| version | `12` |" in run.summary
    server.assert_clean()


@pytest.mark.docker
def test_a_self_hosted_runner_takes_a_version_from_package_to_production(repo, runner_temp, installed, base_image,
                                                                         monkeypatch):
    """The action's stages as the rendered workflow chains them, on a runner with Docker: each job's
    outputs (image, digest, scoring-uri) feed the next, and production answers with the model."""
    import secrets
    import socket

    import requests

    from pipeline_plugin.targets import get_target

    def port() -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return str(s.getsockname()[1])

    example = ROOT / "examples" / "churn"
    service = f"act-{secrets.token_hex(3)}"
    model = {"model-name": "churn", "model-version": "1"}
    env = {"PIP_NO_INDEX": "false"}  # the wheelhouse may need to download the example's wheels
    monkeypatch.setenv("PIPELINE_PLUGIN_STATE_DIR", str(repo / "state"))  # the state dir run_action gives the steps
    try:
        package = run_stage({"stage": "package", **model, "model-uri": str(example / "model.pkl"),
                             "entry-script": str(example / "score.py"), "requirements": str(example / "requirements.txt"),
                             "image": f"pipeline-plugin/{service}:1", "base-image": base_image},
                            repo, runner_temp, installed, extra_env=env)
        assert package.returncode == 0, package.stderr[-3000:] + package.stdout[-2000:]
        assert package.outputs["image"] == f"pipeline-plugin/{service}:1"
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", package.outputs["digest"]), package.outputs  # not pushed: the image id
        assert "### Packaged model image" in package.summary and package.outputs["digest"] in package.summary

        staging = run_stage({"stage": "deploy", **model, "image": package.outputs["image"], "service": service,
                             "environment": "staging", "target": "docker", "port": port()},
                            repo, runner_temp, installed)
        assert staging.returncode == 0, staging.stderr[-3000:]
        assert staging.outputs["scoring-uri"].endswith("/score")

        smoke = run_stage({"stage": "smoke-test", "scoring-uri": staging.outputs["scoring-uri"], "service": service,
                           "environment": "staging", "sample": str(example / "sample.json"),
                           "expect": str(example / "expected.json")},
                          repo, runner_temp, installed)
        assert smoke.returncode == 0, smoke.stderr[-3000:] + smoke.stdout[-2000:]

        production = run_stage({"stage": "promote", **model, "service": service, "from": "staging", "to": "production",
                                "port": port()}, repo, runner_temp, installed)
        assert production.returncode == 0, production.stderr[-3000:] + production.stdout[-2000:]
        uri = production.outputs["scoring-uri"]
        assert uri.endswith("/score") and uri != staging.outputs["scoring-uri"]
        sample = json.loads((example / "sample.json").read_text())
        assert requests.post(uri, json=sample, timeout=10).json() == json.loads((example / "expected.json").read_text())
        assert "### Promotion" in production.summary and "promoted" in production.summary

        # the rollback job after a promotion that rolled itself back changes nothing
        held = run_stage({"stage": "rollback", **model, "service": service, "environment": "production",
                          "if-serving": "2"}, repo, runner_temp, installed)
        assert held.returncode == 0, held.stderr[-2000:]
        assert requests.post(uri, json=sample, timeout=10).status_code == 200
    finally:
        tgt = get_target("docker")
        for environment in ("staging", "production"):
            tgt.delete(service, environment)
