"""The GitLab CI/CD catalog component `deploy-model` (templates/deploy-model.yml, the catalog's
layout at the project root): valid for GitLab's own CI schema (GitLab's ci.json as check-jsonschema ships it), its inputs
described and typed with the rule settings' defaults, and, expanded by a real third-party runner
(gitlab-ci-local 4.64, which implements `include: component:` and `spec: inputs`), the same jobs as the
pipeline `render --provider gitlab` writes for the same rule. The include it is used with is the one
`init --provider gitlab --component` writes. (test_gitlab_pipeline.py runs its jobs end to end.)"""

from __future__ import annotations

import importlib.resources
import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline_plugin import __version__
from pipeline_plugin.ci import gitlab_component
from pipeline_plugin.cli import main
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.render import SETTINGS, render_pipeline

from . import gitlab_local

ROOT = Path(__file__).resolve().parents[2]
COMPONENT = ROOT / "templates" / "deploy-model.yml"
#: GitLab's own CI schema (gitlab-org/gitlab app/assets/javascripts/editor/schema/ci.json) as the
#: check-jsonschema package (a test dependency) ships it
SCHEMA = json.loads(importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("gitlab-ci.json").read_text())
EVENT = ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "churn", "version": "3",
                                     "registry": {"tracking_uri": "http://mlflow.example:5000"}})
#: the variables `dispatch` passes: the rendered file carries them as values, the component as ""
EVENT_VARIABLES = {"MODEL_NAME", "MODEL_VERSION", "MODEL_SOURCE", "MODEL_EVENT_KIND", "EVENT_ID", "MODEL_TAGS",
                   "ARTIFACT_URI", "MODEL_REGISTRY", "MODEL_TRACKING_URI"}
RULES = {
    "defaults": {"service": "churn"},
    "gated, tagged runner, own settings": {
        "service": "churn-svc", "approval": True, "runner_tags": "docker-host, ml", "requirements": "requirements.txt",
        "expect": "expected.json", "staging_port": 9101, "production_port": 9102, "push": True, "strategy": "canary",
        "image_repository": "registry.example.com/ml", "install": "pipeline-plugin[mlflow,postgres]==0.1.0"},
}
_WHOLE = re.compile(r"^\$\[\[\s*inputs\.([\w-]+)\s*\]\]$")
_PART = re.compile(r"\$\[\[\s*inputs\.([\w-]+)\s*\]\]")


def interpolate(node, values: dict):
    """GitLab's input interpolation: a value that is one `$[[ inputs.x ]]` takes the input's type,
    one inside a longer string becomes text."""
    if isinstance(node, dict):
        return {k: interpolate(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, values) for v in node]
    if isinstance(node, str):
        whole = _WHOLE.match(node)
        if whole:
            return values[whole.group(1)]
        return _PART.sub(lambda m: str(values[m.group(1)]), node)
    return node


def component_docs() -> tuple[dict, dict]:
    header, body = yaml.safe_load_all(COMPONENT.read_text())
    return header, body


def schema_errors(doc) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(doc)]


def test_component_header_declares_typed_described_inputs_with_the_rule_defaults():
    header, _ = component_docs()
    assert schema_errors(header) == []
    inputs = header["spec"]["inputs"]
    for name, item in inputs.items():
        assert item.get("description") and item.get("type") in ("string", "number", "boolean", "array"), name
        if "options" in item:
            assert item["default"] in item["options"], name
    # a rule's defaults and the component's are the same (install: the release's own pinned build)
    expected = gitlab_component.inputs({"service": "x"})
    assert {k: v for k, v in expected.items() if k != "service"} == gitlab_component.defaults()
    assert "default" not in inputs["service"]  # required: a service name is the user's choice
    assert inputs["install"]["default"].endswith(f"=={__version__}")
    # options are the values render accepts
    for name in ("target", "strategy"):
        for option in inputs[name]["options"]:
            assert re.fullmatch(SETTINGS[name].pattern, option), (name, option)
        with pytest.raises(Exception):
            render_pipeline("gitlab", EVENT, "r", {name: "nope"})


@pytest.mark.parametrize("rule", list(RULES), ids=list(RULES))
def test_component_and_rendered_pipeline_validate_against_gitlabs_ci_schema(rule):
    _, body = component_docs()
    values = {**gitlab_component.defaults(), **gitlab_component.inputs(RULES[rule])}
    filled = interpolate(body, values)
    assert "$[[" not in json.dumps(filled)
    assert schema_errors(filled) == []
    rendered = yaml.safe_load(render_pipeline("gitlab", EVENT, "r", RULES[rule]).text)
    assert schema_errors(rendered) == []


def test_schema_rejects_what_gitlab_rejects():
    """The vendored schema is the real one: an unknown job key and a bad `when` fail."""
    _, body = component_docs()
    filled = interpolate(body, {**gitlab_component.defaults(), "service": "s"})
    broken = json.loads(json.dumps(filled))
    broken["smoke-test"]["retries"] = 2
    broken["promote-production"]["when"] = "later"
    errors = schema_errors(broken)
    assert any(e.startswith("smoke-test") for e in errors) and any(e.startswith("promote-production") for e in errors)


@pytest.fixture(scope="module")
def runner():
    try:
        return gitlab_local.executable()
    except gitlab_local.MissingTool as exc:
        pytest.fail(str(exc))


#: gitlab-ci-local 4.64 bundles an older copy of GitLab's schema in which `tags` needs one item; GitLab's
#: own schema (GitLab's ci.json, checked above) and GitLab take `tags: []` (the default: no tags)
EMPTY_TAGS = ["--ignore-schema-paths", "#/definitions/tags/minItems"]


def preview(project: Path, exe: Path) -> dict:
    """gitlab-ci-local's expanded configuration (includes resolved, inputs interpolated, defaults merged)."""
    proc = subprocess.run([str(exe), "--preview", *EMPTY_TAGS], cwd=project, capture_output=True, text=True, timeout=180,
                          env=gitlab_local._env(project, None))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return yaml.safe_load(proc.stdout)


def component_project(where: Path, text_for_ref) -> Path:
    """A project holding the component at the catalog's path whose `.gitlab-ci.yml` includes it by
    `$CI_SERVER_FQDN/GROUP/PROJECT/deploy-model@SHA` (gitlab-ci-local resolves a component of the project
    itself at its commit SHA from the work tree; GitLab would fetch the same file at that tag)."""
    project = gitlab_local.make_project(where, {"templates/deploy-model.yml": COMPONENT, ".gitlab-ci.yml": "x: {script: [true]}\n"})
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True).stdout.strip()
    (project / ".gitlab-ci.yml").write_text(text_for_ref(f"$CI_SERVER_FQDN/acme/models/{gitlab_component.NAME}@{sha}"))
    return project


def comparable(doc: dict) -> dict:
    """A configuration without what legitimately differs: the event's variable values (rendered per
    event, passed by dispatch to the component), empty runner tags, `when: on_success` (the default)."""
    doc = json.loads(json.dumps(doc))
    for name in EVENT_VARIABLES:
        doc["variables"].pop(name, None)
    for key, job in doc.items():
        if not isinstance(job, dict) or "script" not in job:
            continue
        if job.get("tags") == []:
            job.pop("tags")
        if job.get("when") == "on_success":
            job.pop("when")
            if job.get("allow_failure") is False:
                job.pop("allow_failure")
        job["variables"] = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (job.get("variables") or {}).items()}
    return doc


@pytest.mark.parametrize("rule", list(RULES), ids=list(RULES))
def test_init_component_include_gives_the_rendered_jobs_under_gitlab_ci_local(rule, runner, tmp_path):
    pipeline = RULES[rule]
    rendered = render_pipeline("gitlab", EVENT, "deploy-churn", pipeline).text
    plain = gitlab_local.make_project(tmp_path / "rendered" / "project", {".gitlab-ci.yml": rendered})
    included = component_project(tmp_path / "component" / "project",
                                 lambda ref: gitlab_component.include(pipeline, "deploy-churn", ref=ref))
    want, got = preview(plain, runner), preview(included, runner)
    assert sorted(EVENT_VARIABLES) == sorted(k for k in got["variables"] if got["variables"][k] == "")
    assert comparable(got) == comparable(want)
    jobs = [k for k, v in got.items() if isinstance(v, dict) and "script" in v]
    assert jobs == [k for k, v in want.items() if isinstance(v, dict) and "script" in v]
    assert {"stop-staging", "stop-production"} <= set(jobs)
    assert got["deploy-staging"]["environment"]["on_stop"] == "stop-staging"
    assert got["stop-production"]["environment"] == {"name": "production", "action": "stop"}
    assert "delete --name \"$SERVICE\" --env production" in got["stop-production"]["script"][0]


def test_a_value_outside_an_inputs_options_is_refused_by_the_runner(runner, tmp_path):
    project = component_project(tmp_path / "bad" / "project", lambda ref: yaml.safe_dump(
        {"include": [{"component": ref, "inputs": {"service": "s", "target": "bare-metal"}}]}))
    proc = subprocess.run([str(runner), "--list"], cwd=project, capture_output=True, text=True, timeout=180,
                          env=gitlab_local._env(project, None))
    assert proc.returncode != 0
    assert "not in the list of allowed options" in proc.stdout + proc.stderr


def test_init_component_writes_one_include_and_refuses_other_providers(tmp_path, capsys):
    assert main(["init", "--provider", "gitlab", "--component", "--dir", str(tmp_path), "--model", "Churn", "--json"]) == 0
    doc = yaml.safe_load((tmp_path / ".gitlab-ci.yml").read_text())
    [item] = doc["include"]
    assert item["component"] == f"$CI_SERVER_FQDN/pipeline-plugin/pipeline-plugin/deploy-model@{__version__}"
    rule = yaml.safe_load((tmp_path / "triggers" / "deploy-churn.yml").read_text())["pipeline"]
    assert item["inputs"]["service"] == rule["service"] == "churn"
    assert item["inputs"]["production_when"] == "manual"  # the rule's approval: true
    assert set(doc) == {"include"}
    capsys.readouterr()
    assert main(["init", "--provider", "github", "--component", "--dir", str(tmp_path / "gh")]) == 2
    assert "--component" in capsys.readouterr().err


def test_readme_and_docs_name_the_component_as_init_writes_it():
    for doc in ("README.md", "docs/ci.md"):
        refs = set(re.findall(r"component: (\S+)", (ROOT / doc).read_text()))
        assert refs == {gitlab_component.reference()}, (doc, refs)
    assert gitlab_component.reference() == f"$CI_SERVER_FQDN/pipeline-plugin/pipeline-plugin/deploy-model@{__version__}"


def test_include_without_a_service_names_the_setting():
    from pipeline_plugin.errors import ConfigError

    with pytest.raises(ConfigError, match="pipeline.service is not set"):
        gitlab_component.include({}, "deploy-churn")
    with pytest.raises(ConfigError, match="pipeline.staging_port"):
        gitlab_component.include({"service": "s", "staging_port": "high"}, "deploy-churn")
