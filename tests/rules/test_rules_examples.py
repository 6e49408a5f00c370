"""The example rules in triggers/ load together (as `serve --triggers triggers` loads them) and do
what their comments say."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline_plugin import settings
from pipeline_plugin.rules import check_rules, evaluate, load_rules, matching
from pipeline_plugin.sources import Headers, Request, get_source

from .helpers import event

TRIGGERS = settings.data_dir("triggers")


@pytest.fixture(scope="module")
def rules():
    loaded = load_rules(TRIGGERS)
    return {rule.name: rule for rule in loaded}


def enabled(rule):
    """The disabled examples point at placeholders; test their conditions as if enabled."""
    return dataclasses.replace(rule, enabled=True)


def test_every_example_file_loads_and_is_documented():
    rules, errors = check_rules(TRIGGERS)
    assert errors == []
    files = sorted(p.name for p in TRIGGERS.iterdir() if p.suffix in (".yml", ".yaml"))
    assert sorted({r.file.name for r in rules}) == files
    readme = (TRIGGERS / "README.md").read_text()
    for name in files:
        assert name in readme, f"triggers/README.md does not mention {name}"
    for rule in rules:
        assert rule.file.read_text().startswith("#"), f"{rule.file.name} should open with a comment saying what it does"


def test_github_champion_alias(rules):
    rule = enabled(rules["churn-champion-github"])
    assert not evaluate(rules["churn-champion-github"], event(kind="alias.set", alias="champion")).matched
    assert evaluate(rule, event(kind="alias.set", alias="champion")).matched
    assert evaluate(rule, event(kind="alias.set", alias="challenger")).condition == "alias"
    assert rule.pipeline["provider"] == "github" and rule.pipeline["workflow"] == "deploy-model.yml"


def test_gitlab_azureml_latest(rules):
    rule = enabled(rules["fraud-latest-gitlab"])
    ws = {"workspace": "ws-prod", "subscription": "0000", "resource_group": "rg-mlops"}

    class Inbox:
        def latest_version(self, source, registry_key, model):
            return "7"

    assert evaluate(rule, event(source="azureml", model="fraud-detector", version="7", registry=ws), Inbox()).matched
    late = evaluate(rule, event(source="azureml", model="fraud-detector", version="6", registry=ws), Inbox())
    assert (late.matched, late.condition) == (False, "version")
    other_ws = evaluate(rule, event(source="azureml", model="fraud-x", registry={"workspace": "mlw-dev"}))
    assert other_ws.condition == "registry"
    experiment = evaluate(rule, event(source="azureml", model="fraud-x", registry=ws, tags={"experiment": "lr-sweep"}))
    assert experiment.condition == "exclude"
    assert rule.pipeline["trigger_token_env"] == "GITLAB_TRIGGER_TOKEN"


def test_azure_devops_version_range(rules):
    rule = enabled(rules["credit-risk-azure-devops"])
    candidate = {"stage_hint": "candidate"}
    assert evaluate(rule, event(source="azureml", model="credit-risk", version="3", tags=candidate)).matched
    assert evaluate(rule, event(source="azureml", model="credit-risk", version="10", tags=candidate)).condition == "version"
    assert evaluate(rule, event(source="azureml", model="credit-risk", version="5")).condition == "tags"


def test_sagemaker_approval_gate(rules):
    rule = enabled(rules["churn-sagemaker-approved"])
    group = {"model_package_group": "churn-model-group", "account": "123456789012", "region": "us-east-2"}
    approved = event(source="sagemaker", kind="model_version.approved", model="churn-model-group", version="2",
                     registry=group, approval_status="Approved")
    assert evaluate(rule, approved).matched
    pending = dataclasses.replace(approved, kind="model_version.created", approval_status="PendingManualApproval")
    assert not evaluate(rule, pending).matched
    assert rule.pipeline["approval"] is True and rule.pipeline["mode"] == "repository_dispatch"


def test_docker_registry_image_pushed_records_only(rules):
    rule = rules["model-server-image-pushed"]
    assert rule.enabled and rule.pipeline is None
    pushed = event(source="docker-registry", kind="image.pushed", model="research/churn-model-server", version="v1",
                   registry={"host": "127.0.0.1:5001", "repository": "research/churn-model-server"},
                   digest="sha256:4d291544d7e2e0e1c8e11b63e5a7bc5bbb9584743f75bf01732e53f0b9a3d2c4")
    assert evaluate(rule, pushed).matched
    assert evaluate(rule, dataclasses.replace(pushed, version="latest")).condition == "version"
    assert evaluate(rule, dataclasses.replace(pushed, version="v2-rc1")).condition == "exclude"
    assert evaluate(rule, dataclasses.replace(pushed, kind="model_version.deleted")).condition == "kind"


def test_churn_to_production_runs_the_example_model(rules):
    rule = rules["churn-to-production"]
    assert rule.enabled and rule.provider == "local"
    # the paths point at the shipped example, relative to the rule file
    for key in ("entry_script", "requirements", "sample", "expect"):
        path = (rule.directory / rule.pipeline[key]).resolve()
        assert path.is_file() and path.parent.name == "churn", (key, path)
    # `python examples/churn/train.py --register churn` registers the model as `churn`
    assert evaluate(rule, event(model="churn", version="1")).matched
    assert evaluate(rule, event(model="churn-eu", version="12")).matched
    assert evaluate(rule, event(model="churnx", version="1")).condition == "model"
    assert evaluate(rule, event(model="churn", version="1", kind="alias.set", alias="champion")).condition == "kind"
    assert evaluate(rule, event(model="churn", version="1", source="azureml")).condition == "source"


# ---- real deliveries, parsed by the real sources, against the examples ------------------------

SAMPLES = Path(__file__).resolve().parent.parent / "sources" / "samples"


def parsed(source: str, relative: str):
    """The events a recorded delivery (tests/sources/samples) normalises to."""
    data = json.loads((SAMPLES / relative).read_text())
    req = data.get("request", data)
    body = data["raw_body"].encode() if data.get("raw_body") else json.dumps(req["body"]).encode()
    request = Request(req.get("method", "POST"), "/", Headers(req.get("headers") or {}), body)
    return get_source(source).parse(request)


@pytest.mark.parametrize(
    "source,sample,expected",
    [
        ("mlflow", "mlflow/02_model_version.created_v1_via_register_model.json", ["churn-to-production"]),
        ("mlflow", "mlflow/04_model_version_alias.created_champion_v2.json", ["churn-champion-github"]),
        ("mlflow", "mlflow/05_model_version_tag.set.json", []),
        ("sagemaker", "sagemaker/01_model_package_state_change_approved.json", ["churn-sagemaker-approved"]),
        ("docker-registry", "docker-distribution/01_push_manifest_v1.json", ["model-server-image-pushed"]),
        ("azureml", "azure-ml/01_ModelRegistered_eventgrid_schema.json", []),
        ("huggingface", "huggingface/01_repo_content_update_new_tag.json", []),
    ],
)
def test_recorded_deliveries_match_the_examples(rules, source, sample, expected):
    all_enabled = [enabled(rule) for rule in rules.values()]
    events = parsed(source, sample)
    assert events
    for ev in events:
        assert [r.name for r in matching(all_enabled, ev)] == expected, ev
