"""Rules of Azure Pipelines the rendered YAML must keep, which the vendored schema does not check:
a deployment job may not be named `deploy` (a keyword Azure refuses there), every
`$[ stageDependencies... ]` names a stage, job and step that exist (a deployment job's outputs are
keyed `<job>.<step>.<variable>`), and a deployment job's lifecycle hook, which runs as an agent job
of its own, sets up the Python it uses."""

from __future__ import annotations

import re

import pytest
import yaml

from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.render import render_pipeline

STAGE_OUTPUT = re.compile(r"\$\[\s*stageDependencies\.(\w+)\.(\w+)\.outputs\['([\w.]+)'\]\s*\]")


def rendered(target: str) -> dict:
    event = ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "churn",
                                         "version": "3", "registry": {"tracking_uri": "http://mlflow.internal:5000"}})
    return yaml.safe_load(render_pipeline("azure-pipelines", event, "r", {"target": target}).text)


def jobs(doc: dict) -> dict[tuple[str, str], dict]:
    return {(s["stage"], j.get("job") or j["deployment"]): j for s in doc["stages"] for j in s["jobs"]}


def hooks(job: dict) -> dict[str, list[dict]]:
    run_once = job["strategy"]["runOnce"]
    on = run_once.get(True) or run_once.get("on") or {}  # YAML 1.1 reads the key `on` as true
    out = {name: hook["steps"] for name, hook in run_once.items() if name not in (True, "on")}
    out.update({f"on.{name}": hook["steps"] for name, hook in on.items()})
    return out


@pytest.mark.parametrize("target", ["docker", "kubernetes"])
def test_no_deployment_job_is_named_deploy(target):
    for (stage, name), job in jobs(rendered(target)).items():
        if "deployment" in job:
            assert name != "deploy", f"stage {stage}: Azure refuses `deploy` as a deployment job's name"


@pytest.mark.parametrize("target", ["docker", "kubernetes"])
def test_stage_dependencies_name_existing_outputs(target):
    doc = rendered(target)
    all_jobs = jobs(doc)
    refs = STAGE_OUTPUT.findall(yaml.safe_dump(doc, width=1000))
    assert refs, "the stages hand on no outputs"
    for stage, job_name, key in refs:
        job = all_jobs.get((stage, job_name))
        assert job is not None, f"stageDependencies.{stage}.{job_name}: no such job in that stage"
        if "deployment" in job:
            prefix, step_name, _var = key.split(".")
            assert prefix == job_name, f"a deployment job's outputs are keyed {job_name}.<step>.<variable>: {key}"
            steps = [s for hook in hooks(job).values() for s in hook]
        else:
            step_name, _var = key.split(".")
            steps = job["steps"]
        assert step_name in {s.get("name") for s in steps}, f"{key}: no step named {step_name} in {job_name}"


@pytest.mark.parametrize("target", ["docker", "kubernetes"])
def test_each_lifecycle_hook_sets_up_its_own_python(target):
    for (stage, name), job in jobs(rendered(target)).items():
        if "deployment" not in job:
            continue
        for hook, steps in hooks(job).items():
            scripts = " ".join(s.get("bash", "") for s in steps)
            if "python" in scripts or "pipeline-plugin" in scripts:
                tasks = [s.get("task", "") for s in steps]
                assert any(t.startswith("UsePythonVersion@") for t in tasks), f"{stage}.{name} hook {hook}"
