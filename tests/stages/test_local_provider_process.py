"""The local provider without Docker: package as a folder, staging and production as local
processes (process target), through the same chain a matched rule runs."""

from __future__ import annotations

import secrets

import requests

from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.history import History
from pipeline_plugin.providers import PipelineRun, get_provider
from pipeline_plugin.targets import get_target
from tests.e2e.models import SAMPLE, expected, write_version


def local_run(tmp_path, monkeypatch, event_for, expect: bool = False, approval: bool = False) -> tuple:
    """(state dir, service, run) for a rule with the local provider on the process target;
    ``event_for(files)`` gives the event (files: the example version written to ``tmp_path``)."""
    state = tmp_path / "state"
    monkeypatch.setenv("PIPELINE_PLUGIN_STATE_DIR", str(state))
    service = f"proc-{secrets.token_hex(3)}"
    files = write_version(tmp_path, 1)
    pipeline = {"provider": "local", "service": service, "target": "process", "entry_script": files["entry_script"],
                "sample": files["sample"], "approval": approval,
                "allowed_roots": [str(tmp_path)]}  # the event's artifact_uri is a local path: allow its folder
    if expect:
        pipeline["expect"] = files["expect"]
    run = PipelineRun(run_id=f"run-{service}", rule_name="proc", pipeline=pipeline, event=event_for(files),
                      state_dir=state, rules_dir=tmp_path)
    return state, service, run


def test_chain_on_the_process_target(tmp_path, monkeypatch):
    state, service, run = local_run(
        tmp_path, monkeypatch,
        lambda files: ModelVersionEvent(source="cloudevents", kind="model_version.created", model="sums", version="1",
                                        delivery_id="d-proc-1", artifact_uri=str(files["model_file"])),
        expect=True, approval=True)
    tgt = get_target("process")
    try:
        result = get_provider("local").dispatch(run)
        # the rule asks for approval: staging passed, production waits
        assert result.status == "pending-approval", result.detail
        assert f"pipeline-plugin approve run-{service}" in result.detail
        assert tgt.get(service, "production") is None
        staging = tgt.get(service, "staging")
        assert requests.post(staging.scoring_uri, json={"data": SAMPLE}, timeout=30).json() == expected(1)
        from pipeline_plugin.cli import main

        assert main(["approve", f"run-{service}", "--by", "carol"]) == 0
        prod = tgt.get(service, "production")
        assert prod.image_id == staging.image_id
        assert requests.post(prod.scoring_uri, json={"data": SAMPLE}, timeout=30).json() == expected(1)
        kinds = [(r.action, r.env, r.status) for r in reversed(History(state).records(service=service))]
        assert kinds[:4] == [("package", "staging", "succeeded"), ("deploy", "staging", "succeeded"),
                             ("smoke-test", "staging", "passed"), ("approval", "production", "pending")]
        assert ("promote", "production", "succeeded") in kinds
    finally:
        for env in ("staging", "production"):
            tgt.delete(service, env)


def test_a_version_whose_files_cannot_be_fetched_is_in_the_history(tmp_path, monkeypatch):
    state, service, run = local_run(  # an event from an MLflow server nobody named
        tmp_path, monkeypatch,
        lambda files: ModelVersionEvent(source="mlflow", kind="model_version.created", model="sums", version="9",
                                        delivery_id="d-proc-9"))
    result = get_provider("local").dispatch(run)
    assert result.status == "failed" and "tracking_uri" in result.detail
    [rec] = History(state).records(service=service)
    assert (rec.action, rec.status, rec.version) == ("fetch", "failed", "9") and "tracking_uri" in rec.reason


def test_one_pipeline_at_a_time_per_service(tmp_path):
    """Two rules (or two workers) that deploy one service: the second waits for the first."""
    import threading
    import time

    from pipeline_plugin.providers.local import service_lock

    order: list[str] = []
    said: list[str] = []
    inside = threading.Event()

    def first():
        with service_lock(tmp_path, "churn", said.append):
            inside.set()
            time.sleep(0.3)
            order.append("first done")

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(5)
    with service_lock(tmp_path, "churn", said.append):
        order.append("second in")
    t.join()
    assert order == ["first done", "second in"]
    assert said == ["waiting: another pipeline of churn is running"]
    with service_lock(tmp_path, "fraud", said.append):  # another service does not wait
        pass
    assert len(said) == 1
