"""What the stages need on separate runners reaches every stage of every rendered pipeline: the
shared store's URL from a secret (never in script text), MLflow's tracking URI (the CI system's
variable, else the event's) and the event's source and registry identity for `package` (the image
labels promote's write-back reads). The scripts are run with a stand-in `pipeline-plugin` that
records its arguments and environment, with the variables each CI system would give them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.render import render_pipeline

STAGES = ("package", "deploy", "smoke-test", "promote", "rollback")
SECRET_URL = "postgresql://deployer:s3cr3t-pw@db.internal:5432/pipeline"
TRACKING = "http://mlflow.internal:5000"
FALLBACK = "http://fallback.internal:5000"  # the CI system's own MLFLOW_TRACKING_URI variable


def mlflow_event(**registry: str) -> ModelVersionEvent:
    return ModelVersionEvent.from_dict({
        "source": "mlflow", "kind": "model_version.created", "model": "churn", "version": "3",
        "registry": registry, "artifact_uri": "models:/churn/3",
    })


def render(provider: str, pipeline: dict | None = None, **registry: str) -> dict:
    return yaml.safe_load(render_pipeline(provider, mlflow_event(**registry), "r", pipeline or {}).text)


def stage_of(script: str) -> str | None:
    m = re.search(r"(?:pipeline-plugin |args=\(|set -- )(package|deploy|smoke-test|promote|rollback)\b", script)
    return m.group(1) if m else None


# ---- static: where the URL comes from and where it never is --------------------------------------
def github_stage_steps(doc: dict) -> dict[str, dict]:
    steps = {}
    for job in doc["jobs"].values():
        for step in job["steps"]:
            stage = (step.get("with") or {}).get("stage")
            if stage:
                steps[stage] = step
    return steps


def azure_stage_steps(doc: dict) -> dict[str, dict]:
    steps: dict[str, dict] = {}

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("bash"), str) and stage_of(node["bash"]):
                steps[stage_of(node["bash"])] = node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return steps


def gitlab_stage_jobs(doc: dict) -> dict[str, dict]:
    jobs = {}
    for name, job in doc.items():
        if isinstance(job, dict) and "script" in job:
            stage = stage_of("\n".join(job["script"]))
            if stage:
                jobs[stage] = job
    return jobs


@pytest.mark.parametrize("secret", [None, "PROD_PIPELINE_DB"])
def test_github_every_stage_step_takes_the_database_url_from_a_secret(secret):
    doc = render("github", {"database_secret": secret} if secret else {})
    steps = github_stage_steps(doc)
    assert set(steps) == set(STAGES)
    for stage, step in steps.items():
        assert step["with"]["database-url"] == "${{ secrets.%s }}" % (secret or "PIPELINE_PLUGIN_DATABASE_URL"), stage


@pytest.mark.parametrize("secret", [None, "PROD_PIPELINE_DB"])
def test_azure_every_stage_step_maps_the_secret_variable_into_its_env(secret):
    doc = render("azure-pipelines", {"database_secret": secret} if secret else {})
    steps = azure_stage_steps(doc)
    assert set(steps) == set(STAGES)
    for stage, step in steps.items():
        # Azure hands a secret variable to a script only through an explicit env mapping
        assert step["env"]["PIPELINE_PLUGIN_DATABASE_URL"] == "$(%s)" % (secret or "PIPELINE_PLUGIN_DATABASE_URL"), stage


def test_gitlab_jobs_read_the_masked_project_variable_and_never_define_it():
    """GitLab gives every job the project's CI/CD variables; a value in the YAML would be the secret
    in the repository, so the pipeline must not define one (nor stop jobs inheriting variables)."""
    text = render_pipeline("gitlab", mlflow_event(), "r", {}).text
    doc = yaml.safe_load(text)
    assert set(gitlab_stage_jobs(doc)) == set(STAGES)
    assert "PIPELINE_PLUGIN_DATABASE_URL" not in (doc.get("variables") or {})
    for name, job in doc.items():
        if isinstance(job, dict):
            assert "PIPELINE_PLUGIN_DATABASE_URL" not in (job.get("variables") or {}), name
            assert "inherit" not in job, name
    assert "PIPELINE_PLUGIN_DATABASE_URL" in text.split("workflow:")[0]  # the header says where to set it


def _scripts(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("run", "bash", "script", "before_script", "after_script"):
                yield from (value if isinstance(value, list) else [value])
            else:
                yield from _scripts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _scripts(item)


@pytest.mark.parametrize("provider", ["github", "azure-pipelines", "gitlab"])
def test_the_database_url_never_appears_in_script_text(provider):
    """A secret expanded into script text ends up in the script file on the runner and in error
    output: scripts may only read the environment variable."""
    doc = render(provider, {"database_secret": "PROD_PIPELINE_DB"})
    for script in _scripts(doc):
        assert "PROD_PIPELINE_DB" not in script and "secrets." not in script, script
        assert "$(PIPELINE_PLUGIN_DATABASE_URL)" not in script and "database-url" not in script, script


def test_action_takes_the_database_url_only_through_env_and_masks_it():
    action = yaml.safe_load((Path(__file__).resolve().parents[2] / "action.yml").read_text())
    assert "database-url" in action["inputs"] and action["inputs"]["database-url"]["description"]
    run = action["runs"]["steps"][-1]
    assert run["env"]["PIPELINE_PLUGIN_DATABASE_URL"] == "${{ inputs.database-url }}"
    for step in action["runs"]["steps"]:
        assert "database-url" not in step["run"]
    assert 'echo "::add-mask::$PIPELINE_PLUGIN_DATABASE_URL"' in run["run"]


# ---- run the scripts as each CI system would --------------------------------------------------------
@pytest.fixture
def stub(tmp_path):
    """A `pipeline-plugin` on PATH that records argv and environment and prints `{}`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    (bin_dir / "pipeline-plugin").write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps({{'argv': sys.argv[1:], 'env': dict(os.environ)}}) + '\\n')\n"
        "print('{}')\n")
    (bin_dir / "pipeline-plugin").chmod(0o755)

    def calls() -> list[dict]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return bin_dir, calls


def run_bash(script: str, env: dict[str, str], bin_dir: Path, cwd: Path) -> None:
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(cwd)}
    proc = subprocess.run(["bash", "-c", script], env={**base, **env}, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + script


def stage_calls(calls: list[dict]) -> dict[str, dict]:
    return {c["argv"][0]: c for c in calls if c["argv"] and c["argv"][0] in STAGES}


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def azure_env(value: str, params: dict[str, str], variables: dict[str, str]) -> str:
    """Azure's expansion of a step's env value: ${{ parameters.x }} at compile time, $(NAME)
    macros at run time, left as they are when NAME is not defined."""
    value = re.sub(r"\$\{\{ parameters\.(\w+) \}\}", lambda m: params[m.group(1)], value)
    return re.sub(r"\$\(([\w.]+)\)", lambda m: variables.get(m.group(1), m.group(0)), value)


def expected_tracking(configured: bool, event_tracking: str | None) -> str | None:
    """The CI system's own MLFLOW_TRACKING_URI wins: MLflow credentials never go to an address an
    event names when the project names its server; the event's is used only when none is set."""
    return FALLBACK if configured else event_tracking


@pytest.mark.parametrize("defined", [True, False])
@pytest.mark.parametrize("configured", [True, False])
@pytest.mark.parametrize("event_tracking", [TRACKING, None])
def test_azure_scripts_receive_store_tracking_uri_and_registry(stub, tmp_path, defined, configured, event_tracking):
    bin_dir, calls = stub
    registry = {"tracking_uri": event_tracking} if event_tracking else {}
    doc = render("azure-pipelines", **registry)
    params = {p["name"]: str(p["default"]) for p in doc["parameters"]}
    secrets = {"PIPELINE_PLUGIN_DATABASE_URL": SECRET_URL, "MLFLOW_TRACKING_TOKEN": "mlflow-token"} if defined else {}
    plain = {"SERVICE": "churn", "IMAGE_REPOSITORY": "localhost:5000/models", "IMAGE": "img:3",
             "SCORING_URI": "http://x/score", **({"MLFLOW_TRACKING_URI": FALLBACK} if configured else {})}
    variables = {**plain, **secrets}
    for stage, step in azure_stage_steps(doc).items():
        env = {k: azure_env(str(v), params, variables) for k, v in step["env"].items()}
        # non-secret variables are in every script's environment (upper-cased); secrets are not
        run_bash(step["bash"], {**plain, **env, "AGENT_TEMPDIRECTORY": str(tmp_path)}, bin_dir, tmp_path)
    seen = stage_calls(calls())
    assert set(seen) == set(STAGES)
    for stage, call in seen.items():
        env = call["env"]
        if defined:
            assert env["PIPELINE_PLUGIN_DATABASE_URL"] == SECRET_URL, stage
        else:  # an undefined secret variable is its literal macro text: never passed on as a URL
            assert "PIPELINE_PLUGIN_DATABASE_URL" not in env, stage
            assert "MLFLOW_TRACKING_TOKEN" not in env, stage
        assert env.get("MLFLOW_TRACKING_URI") == expected_tracking(configured, event_tracking), stage
    package = seen["package"]["argv"]
    assert flag(package, "--source") == "mlflow"
    assert flag(package, "--registry") == (f"tracking_uri={event_tracking}" if event_tracking else None)
    if defined:
        assert seen["package"]["env"]["MLFLOW_TRACKING_TOKEN"] == "mlflow-token"
        assert seen["promote"]["env"]["MLFLOW_TRACKING_TOKEN"] == "mlflow-token"


def gitlab_job_env(doc: dict, job: dict, project: dict[str, str]) -> dict[str, str]:
    """Variables a GitLab job sees: the YAML's global and job variables, then the project's CI/CD
    variables (which take precedence)."""
    env: dict[str, str] = {}
    for source in (doc.get("variables") or {}, job.get("variables") or {}):
        for key, value in source.items():
            env[key] = str(value["value"] if isinstance(value, dict) else value)
    return {**env, **project}


@pytest.mark.parametrize("configured", [True, False])
@pytest.mark.parametrize("event_tracking", [TRACKING, None])
def test_gitlab_jobs_receive_store_tracking_uri_and_registry(stub, tmp_path, configured, event_tracking):
    bin_dir, calls = stub
    registry = {"tracking_uri": event_tracking} if event_tracking else {}
    doc = render("gitlab", **registry)
    project = {"PIPELINE_PLUGIN_DATABASE_URL": SECRET_URL, **({"MLFLOW_TRACKING_URI": FALLBACK} if configured else {})}
    dotenv = {"IMAGE": "img:3", "SCORING_URI": "http://x/score"}  # from the previous jobs' reports
    # the default before_script, without the lines that install the tool (the stand-in is on PATH)
    before = [line for line in doc["default"]["before_script"] if "pip" not in line and "venv" not in line]
    for stage, job in gitlab_stage_jobs(doc).items():
        script = "\n".join([*before, *job["script"]])
        run_bash(script, {**gitlab_job_env(doc, job, project), **dotenv}, bin_dir, tmp_path)
    seen = stage_calls(calls())
    assert set(seen) == set(STAGES)
    for stage, call in seen.items():
        assert call["env"]["PIPELINE_PLUGIN_DATABASE_URL"] == SECRET_URL, stage
        assert call["env"].get("MLFLOW_TRACKING_URI") == expected_tracking(configured, event_tracking), stage
    package = seen["package"]["argv"]
    assert flag(package, "--source") == "mlflow"
    assert flag(package, "--registry") == (f"tracking_uri={event_tracking}" if event_tracking else None)


@pytest.mark.parametrize("provider", ["github", "azure-pipelines", "gitlab"])
def test_the_event_registry_identity_arrives_as_data(provider):
    """source, registry and tracking URI are event values: YAML-escaped defaults, never script or
    expression text."""
    ev = mlflow_event(tracking_uri="https://zqxmlflow.example.com:5000/path", workspace="zqxws")
    text = render_pipeline(provider, ev, "r", {}).text
    doc = yaml.safe_load(text)
    for span in re.findall(r"\$\{\{.*?\}\}|\$\[.*?\]|\$\(.*?\)", text, re.S):
        assert "zqx" not in span, span
    for script in _scripts(doc):
        assert "zqx" not in json.dumps(script), script
    assert "https://zqxmlflow.example.com:5000/path" in text
    assert "tracking_uri=https://zqxmlflow.example.com:5000/path;workspace=zqxws" in text


@pytest.mark.parametrize("registry", [
    {"tracking_uri": "http://x/$(id)"}, {"tracking_uri": "http://x/`id`"}, {"workspace": "a b"},
    {"tracking_uri": "http://x/${{ secrets.T }}"}, {"workspace": "ws;evil=1"},
])
def test_a_hostile_registry_identity_is_refused(registry):
    from pipeline_plugin.errors import PayloadError

    with pytest.raises(PayloadError) as info:
        render_pipeline("github", mlflow_event(**registry), "r", {})
    assert info.value.field.startswith("registry")


def test_dispatch_sends_the_same_registry_values_the_pipelines_declare():
    from pipeline_plugin.render import INPUT_VARIABLES, pipeline_inputs

    values = pipeline_inputs(mlflow_event(tracking_uri=TRACKING), {}, "run_1")
    assert values["registry"] == f"tracking_uri={TRACKING}" and values["tracking-uri"] == TRACKING
    gh = render("github", tracking_uri=TRACKING)
    assert set(values) <= set(gh[True]["workflow_dispatch"]["inputs"])
    gl = render("gitlab", tracking_uri=TRACKING)
    assert {INPUT_VARIABLES[k] for k in values} <= set(gl["variables"])
    from pipeline_plugin.providers.azure_devops import TEMPLATE_PARAMETERS

    az = render("azure-pipelines", tracking_uri=TRACKING)
    assert {TEMPLATE_PARAMETERS[k] for k in values} <= {p["name"] for p in az["parameters"]}


def test_github_stages_after_package_name_the_target_so_the_action_installs_its_client():
    """Each job installs the tool in a fresh venv: promote and rollback on the kubernetes target
    need the Kubernetes client there, which the action adds for target kubernetes."""
    steps = github_stage_steps(render("github", {"target": "kubernetes", "push": True}))
    for stage in ("deploy", "smoke-test", "promote", "rollback"):
        assert steps[stage]["with"]["target"] == "kubernetes", stage


def test_a_file_named_by_the_event_is_never_handed_to_a_ci_runner():
    """An event's artifact_uri that is a path or a file: URI would be read from the runner's own
    disk by `package`: the pipeline gets no artifact-uri and fetches the version through its
    registry (models:/NAME/VERSION) instead; registry URIs are handed on as they are."""
    from pipeline_plugin.render import pipeline_inputs

    def inputs(uri: str) -> dict:
        event = ModelVersionEvent.from_dict({"source": "cloudevents", "kind": "model_version.created",
                                             "model": "churn", "version": "3", "artifact_uri": uri})
        return pipeline_inputs(event, {}, "run_1")

    for local in ("file:///home/runner/.ssh/id_rsa", "FILE:/etc/passwd", "/proc/self/environ", "mlruns/1/model"):
        assert inputs(local)["artifact-uri"] == "", local
    for remote in ("models:/churn/3", "s3://bucket/churn/3/model.tar.gz", "hf://acme/churn@0123abc",
                   "wandb-artifact://acme/churn/model:v3"):
        assert inputs(remote)["artifact-uri"] == remote, remote
    rendered = yaml.safe_load(render_pipeline("github", ModelVersionEvent.from_dict(
        {"source": "mlflow", "kind": "model_version.created", "model": "churn", "version": "3",
         "artifact_uri": "file:///mlruns/1/abc/artifacts/model"}), "r", {}).text)
    assert "file:" not in json.dumps(rendered)
