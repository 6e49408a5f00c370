"""The local chain with real Docker: package -> staging -> smoke test -> production, driven through
the local provider exactly as `serve` dispatches a matched rule."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import requests

from pipeline_plugin.cli import main
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.history import History
from pipeline_plugin.providers import PipelineRun, get_provider
from pipeline_plugin.stages.promote import promote
from pipeline_plugin.targets import get_target

from loadgen import LoadLoop
from .models import SAMPLE, expected, write_version


def dispatch(state: Path, rules_dir: Path, service: str, version: int, mode: str = "ok", **extra):
    files = write_version(rules_dir, version, mode)
    pipeline = {"provider": "local", "service": service, "target": "docker", "entry_script": files["entry_script"],
                "sample": files["sample"], "expect": files["expect"], "tolerance": 1e-9,
                "allowed_roots": [str(rules_dir)], **extra}  # the event's artifact_uri is a local path
    event = ModelVersionEvent(source="cloudevents", kind="model_version.created", model="sums", version=str(version),
                              delivery_id=f"d-{secrets.token_hex(4)}", artifact_uri=str(files["model_file"]))
    run = PipelineRun(run_id=f"run-{service}-{version}-{secrets.token_hex(3)}", rule_name="e2e", pipeline=pipeline,
                      event=event, state_dir=state, rules_dir=rules_dir)
    return get_provider("local").dispatch(run)


def production(service: str):
    return get_target("docker").get(service, "production")


def score(uri: str) -> dict:
    r = requests.post(uri, json={"data": SAMPLE}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rule")


@pytest.fixture(scope="module")
def live(e2e_state, e2e_service, rules_dir):
    """Version 1 in production, through the whole chain."""
    result = dispatch(e2e_state, rules_dir, e2e_service, 1)
    assert result.status == "succeeded", result.detail
    return e2e_service


def test_promotion_under_load_has_zero_failed_requests(live, e2e_state, rules_dir):
    prod = production(live)
    port = prod.details["port"]
    before = score(prod.scoring_uri)["version"]
    with load_on(port, {"data": SAMPLE}) as load:
        result = dispatch(e2e_state, rules_dir, live, 2)
    assert result.status == "succeeded", result.detail
    assert load.failures == [], load.failures[:5]
    assert load.ok > 20
    assert set(load.versions) == {before, "2"}  # both versions answered, nothing else failed
    assert score(prod.scoring_uri) == expected(2)
    assert production(live).scoring_uri == prod.scoring_uri  # the stable address did not move


@pytest.mark.parametrize("version,mode,check", [(3, "raises", "status: HTTP 500"), (4, "breaks-schema", "schema:")])
def test_broken_version_fails_in_staging_and_never_reaches_production(live, e2e_state, rules_dir, version, mode, check):
    before = production(live)
    answer = score(before.scoring_uri)
    result = dispatch(e2e_state, rules_dir, live, version, mode)
    assert result.status == "failed"
    assert "staging smoke test failed" in result.detail and check in result.detail
    assert "production untouched" in result.detail
    after = production(live)
    assert after.image_id == before.image_id
    assert score(after.scoring_uri) == answer
    history = History(e2e_state)
    assert not [r for r in history.records(service=live, env="production") if r.version == str(version)]


def test_version_failing_production_checks_is_rolled_back(live, e2e_state, rules_dir):
    before = production(live)
    answer = score(before.scoring_uri)
    result = dispatch(e2e_state, rules_dir, live, 5, "production-fails")
    assert result.status == "failed"
    assert "check failed after the switch" in result.detail and "rolled back to the previous image" in result.detail
    after = production(live)
    assert after.image_id == before.image_id and after.version == before.version
    assert score(after.scoring_uri) == answer  # the previous version's predictions
    records = [r for r in History(e2e_state).records(service=live, env="production", limit=6) if r.action != "writeback"]
    assert [(r.action, r.status, r.version) for r in records[:3]] == [
        ("rollback", "succeeded", before.version), ("promote", "failed", "5"), ("smoke-test", "failed", "5")]


def load_on(port: int, body: dict) -> LoadLoop:
    """Clients of production during a promotion: fresh connections, paced, bounded."""
    return LoadLoop(port, body=json.dumps(body), max_requests=20000, pause_s=0.005)


def stage_only(e2e_state, rules_dir, service, version, mode="ok"):
    """The version in staging with a passing smoke test, production untouched (held for approval)."""
    result = dispatch(e2e_state, rules_dir, service, version, mode, approval=True)
    assert result.status == "pending-approval", result.detail


def test_canary_splits_traffic_then_switches_with_zero_failed_requests(live, e2e_state, rules_dir):
    before = production(live)
    old = score(before.scoring_uri)["version"]
    stage_only(e2e_state, rules_dir, live, 6)
    during = {}

    def progress(msg: str) -> None:
        if msg.startswith("canary:") and "answered 200" in msg:  # the end of the canary window
            during.update(load.versions)

    with load_on(before.details["port"], {"data": SAMPLE}) as load:
        result = promote(live, strategy="canary", canary_weight=30, canary_seconds=3, history=History(e2e_state),
                         progress=progress)
    assert result.status == "promoted", result.reason
    assert load.failures == [], load.failures[:5]
    assert set(during) == {old, "6"}, during  # both versions answered during the canary window
    assert score(before.scoring_uri) == expected(6)
    assert production(live).version == "6" and production(live).details["replicas"] == 1


def test_failing_canary_leaves_production_on_the_old_version(live, e2e_state, rules_dir, capsys):
    before = production(live)
    answer = score(before.scoring_uri)
    stage_only(e2e_state, rules_dir, live, 7, "production-fails")
    with load_on(before.details["port"], {"data": SAMPLE}) as load:
        code = main(["promote", "--name", live, "--strategy", "canary", "--canary-seconds", "2", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1 and result["status"] == "rolled-back", result
    assert "canary" in result["reason"] and "HTTP 500" in result["reason"], result["reason"]
    assert load.failures == [], load.failures[:5]
    assert set(load.versions) == {answer["version"]}
    after = production(live)
    assert after.image_id == before.image_id and score(after.scoring_uri) == answer
    assert len(get_target("docker")._containers(live, "production")) == 1  # the canary's container is gone
    records = [r for r in History(e2e_state).records(service=live, env="production", limit=6) if r.action != "writeback"]
    assert [(r.action, r.status, r.version) for r in records[:2]] == [("promote", "failed", "7"), ("smoke-test", "failed", "7")]


@pytest.mark.parametrize("weight", ["0", "100", "x"])
def test_bad_canary_weight_is_named(live, weight, capsys):
    try:
        code = main(["promote", "--name", live, "--strategy", "canary", "--canary-weight", weight])
    except SystemExit as exc:  # argparse rejects a value that is no number
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "--canary-weight" in err, err
