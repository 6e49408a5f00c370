"""The whole chain from a real MLflow registration to production: `pipeline-plugin demo` starts MLflow
3.17.2 and `serve` with the repo's triggers, registers the example churn model, and the version is
packaged, deployed, smoke-tested and promoted by the local provider; write-back moves the aliases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "churn"


def run_demo(state: Path) -> dict:
    env = {**os.environ, "PIPELINE_PLUGIN_STATE_DIR": str(state)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "pipeline_plugin.cli", "demo", "--json", "--timeout", "600"],
                          cwd=state, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    for step in ("1/6", "2/6", "3/6", "4/6", "5/6", "6/6", "webhook delivered", "smoke test staging: passed",
                 "promote to production: succeeded"):
        assert step in proc.stderr, f"progress line {step!r} missing:\n{proc.stderr}"
    return json.loads(proc.stdout)


def test_mlflow_registration_reaches_production(tmp_path, docker_client, base_image):
    from pipeline_plugin.history import History
    from pipeline_plugin.targets.docker import DockerTarget

    state = tmp_path / "state"
    state.mkdir()
    target = DockerTarget(state_dir=state)
    try:
        first = run_demo(state)
        assert first["status"] == "succeeded" and first["version"] == "1"
        prod = first["production"]
        answer = requests.post(prod["scoring_uri"], data=(EXAMPLE / "sample.json").read_text(),
                               headers={"Content-Type": "application/json"}, timeout=30)
        assert answer.status_code == 200
        assert answer.json() == json.loads((EXAMPLE / "expected.json").read_text())
        assert first["aliases"] == {"production": "1"}
        assert prod["scoring_uri"] in first["curl"]

        # the write-back's own alias/tag events reached the listener and started nothing
        from pipeline_plugin.inbox import Inbox

        echoes = [e for e in Inbox(state).list() if e.event.kind in ("alias.set", "tag.set")]
        assert any(e.event.kind == "alias.set" and e.event.alias == "production" for e in echoes)
        inbox = Inbox(state)
        assert echoes and all(e.status == "ignored" and not inbox.get(e.id).runs for e in echoes), [e.summary() for e in echoes]
        promotions = History(state).records(service="churn", action="promote")
        assert [(r.version, r.status) for r in promotions] == [("1", "succeeded")]
        assert promotions[0].cause.startswith("event:mlflow:model_version.created:")
        assert target.get("churn", "production").image_id == prod["image_id"]
    finally:
        for env in ("staging", "production"):
            target.delete("churn", env)
        for rec in History(state).records(service="churn", action="package"):
            try:
                docker_client.images.remove(rec.image, force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass


def test_demo_without_mlflow_sends_a_signed_sample_delivery(tmp_path, docker_client, base_image):
    from pipeline_plugin.history import History
    from pipeline_plugin.targets.docker import DockerTarget

    state = tmp_path / "state"
    state.mkdir()
    env = {**os.environ, "PIPELINE_PLUGIN_STATE_DIR": str(state)}
    env.pop("MLFLOW_TRACKING_URI", None)
    target = DockerTarget(state_dir=state)
    try:
        proc = subprocess.run([sys.executable, "-m", "pipeline_plugin.cli", "demo", "--no-mlflow", "--json"],
                              cwd=state, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-5000:]
        assert "signing an MLflow model_version.created delivery" in proc.stderr
        result = json.loads(proc.stdout)
        assert result["status"] == "succeeded" and result["version"] == "1"
        answer = requests.post(result["production"]["scoring_uri"], data=(EXAMPLE / "sample.json").read_text(),
                               headers={"Content-Type": "application/json"}, timeout=30)
        assert answer.json() == json.loads((EXAMPLE / "expected.json").read_text())
        wb = History(state).records(service="churn", action="writeback")
        assert wb and wb[0].status == "skipped" and "tracking_uri" in wb[0].reason
    finally:
        for env_name in ("staging", "production"):
            target.delete("churn", env_name)
        for rec in History(state).records(service="churn", action="package"):
            try:
                docker_client.images.remove(rec.image, force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
