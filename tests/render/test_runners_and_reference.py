"""Where the jobs run matches where the model serves, and the action has one reference everywhere
a user copies it from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline_plugin import __version__
from pipeline_plugin.cli import main
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.render import ACTION_REF, SETTINGS, render_pipeline
from pipeline_plugin.rules import load_rules

ROOT = Path(__file__).resolve().parents[2]
EVENT = ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "churn", "version": "1"})


def runners(provider: str, pipeline: dict) -> set:
    doc = yaml.safe_load(render_pipeline(provider, EVENT, "r", pipeline).text)
    if provider == "github":
        return {str(job["runs-on"]) for job in doc["jobs"].values()}
    if provider == "azure-pipelines":
        pools = set()

        def walk(node):
            if isinstance(node, dict):
                if isinstance(node.get("pool"), dict):
                    pools.add(tuple(sorted(node["pool"].items())))
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(doc)
        return pools
    return {tuple(doc["default"].get("tags") or ())}


@pytest.mark.parametrize("target", ["docker", "process"])
def test_targets_that_serve_on_the_runner_run_every_job_on_a_self_hosted_one(target):
    """docker and process serve on the machine that ran deploy: a hosted runner (gone after its
    job) could never be smoke-tested or promoted, so the defaults are self-hosted."""
    assert runners("github", {"target": target}) == {"self-hosted"}
    assert runners("azure-pipelines", {"target": target}) == {(("name", "Default"),)}


def test_the_kubernetes_target_runs_on_hosted_runners_by_default():
    assert runners("github", {"target": "kubernetes"}) == {"ubuntu-latest"}
    assert runners("azure-pipelines", {"target": "kubernetes"}) == {(("vmImage", "ubuntu-latest"),)}


def test_a_rule_names_its_runner_labels_and_pool():
    assert runners("github", {"runs_on": "self-hosted, linux, gpu"}) == {"['self-hosted', 'linux', 'gpu']"}
    assert runners("azure-pipelines", {"pool": "ML agents"}) == {(("name", "ML agents"),)}
    assert runners("azure-pipelines", {"vm_image": "ubuntu-22.04"}) == {(("vmImage", "ubuntu-22.04"),)}
    assert runners("gitlab", {"runner_tags": "docker-host"}) == {("docker-host",)}


@pytest.mark.parametrize("provider,pipeline_file", [
    ("github", ".github/workflows/deploy-model.yml"),
    ("gitlab", ".gitlab-ci.yml"),
    ("azure-devops", "azure-pipelines/deploy-model.yml"),
])
@pytest.mark.parametrize("target", ["docker", "process", "kubernetes"])
def test_init_writes_a_runner_that_can_reach_its_target(tmp_path, capsys, provider, pipeline_file, target):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert main(["init", "--provider", provider, "--dir", str(repo), "--model", "churn", "--target", target]) == 0
    [rule] = load_rules(repo / "triggers")
    p = rule.pipeline
    assert p["target"] == target
    # the example model is scikit-learn: the image must install the scoring code's requirements
    assert p["requirements"] == "requirements.txt"
    doc = yaml.safe_load((repo / pipeline_file).read_text())
    text = (repo / pipeline_file).read_text()
    if provider == "github":
        labels = {str(job["runs-on"]) for job in doc["jobs"].values()}
        assert labels == ({"ubuntu-latest"} if target == "kubernetes" else {"self-hosted"})
        assert p["action"] == ACTION_REF
    elif provider == "azure-devops":
        assert ("vmImage: \"ubuntu-latest\"" in text) == (target == "kubernetes")
        assert ("name: \"Default\"" in text) == (target != "kubernetes")
    else:
        assert doc["default"]["tags"] == ["pipeline-plugin"]  # a runner with the Docker Engine
    if target == "kubernetes":  # the cluster pulls the image: it is pushed to a registry
        assert p["push"] is True and p["image_repository"]


# ---- one reference to the action -----------------------------------------------------------------
def test_the_action_reference_follows_the_release_major_version():
    assert ACTION_REF == f"pipeline-plugin/pipeline-plugin@v{__version__.split('.')[0]}"
    assert SETTINGS["action"].default == ACTION_REF


def test_init_readme_and_docs_name_the_same_action_reference(tmp_path, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert main(["init", "--provider", "github", "--dir", str(repo), "--model", "churn"]) == 0
    workflow = (repo / ".github/workflows/deploy-model.yml").read_text()
    found = {"init": set(re.findall(r"uses: \"?([\w.-]+/pipeline-plugin@[\w.-]+)", workflow))}
    for doc in ("README.md", "docs/ci.md", "docs/walkthrough.md"):
        found[doc] = set(re.findall(r"([\w.-]+/pipeline-plugin@[\w.-]+)", (ROOT / doc).read_text()))
    assert all(found.values()), found  # each of them shows the reference
    assert {ref for refs in found.values() for ref in refs} == {ACTION_REF}, found
