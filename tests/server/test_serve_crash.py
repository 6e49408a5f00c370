"""`pipeline-plugin serve` killed with SIGKILL in the middle of a stream of deliveries: after a
restart nothing that was acknowledged is lost and no pipeline run is recorded twice."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import httpx

from pipeline_plugin.inbox import DB_NAME, run_id_for
from pipeline_plugin.sources.auth import sign
from services import serve_process

SECRET = "crash-test-secret"
RULES = """
- name: churn-any
  match: {source: mlflow, kind: model_version.created, model: "churn-*"}
  pipeline: {provider: github, repository: acme/churn, workflow: deploy.yml}
- name: churn-record
  match: {model: "churn-*"}
"""
TOTAL = 120


def delivery(i: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "entity": "model_version",
            "action": "created",
            "timestamp": "2026-11-25T03:26:08+00:00",
            "data": {"name": "churn-model", "version": str(i + 1), "source": f"models:/m-{i}", "tags": {}},
        }
    ).encode()
    did, ts = f"delivery-{i}", str(int(time.time()))
    return body, {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": did,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": sign(SECRET.encode(), did, ts, body),
    }


def test_kill_9_mid_stream_loses_nothing_acknowledged_and_records_no_run_twice(tmp_path):
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "rules.yml").write_text(RULES)
    state = tmp_path / "state"
    env = {"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET, "GITHUB_TOKEN": "", "GH_TOKEN": "", "GITHUB_APP_ID": ""}
    acked: dict[int, str] = {}
    sent_after_kill: list[int] = []

    with serve_process(state, triggers, env=env) as serve:
        killed = threading.Event()

        def sender() -> None:
            with httpx.Client(base_url=serve.url, timeout=5) as c:
                for i in range(TOTAL):
                    body, headers = delivery(i)
                    try:
                        r = c.post("/webhooks/mlflow", content=body, headers=headers)
                    except httpx.HTTPError:
                        if killed.is_set():
                            sent_after_kill.append(i)
                            continue
                        raise
                    assert r.status_code == 200, r.text
                    acked[i] = r.json()["stored"][0]

        t = threading.Thread(target=sender)
        t.start()
        deadline = time.monotonic() + 60
        while len(acked) < TOTAL // 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        serve.process.kill()  # SIGKILL: no shutdown handler runs
        killed.set()
        serve.process.wait()
        t.join(timeout=60)
    assert TOTAL // 3 <= len(acked) < TOTAL, "the kill did not land mid-stream"
    assert sent_after_kill, "no delivery was refused after the kill"

    # every acknowledged delivery is on disk, before any restart
    db = sqlite3.connect(state / DB_NAME)
    stored_ids = {row[0] for row in db.execute("SELECT id FROM events")}
    db.close()
    assert set(acked.values()) <= stored_ids

    with serve_process(state, triggers, env=env) as serve:
        with httpx.Client(base_url=serve.url, timeout=10) as c:
            # the senders retry what was not acknowledged, and some acknowledged ones again
            for i in sorted(set(range(TOTAL)) - set(acked)) + sorted(acked)[:10]:
                body, headers = delivery(i)
                r = c.post("/webhooks/mlflow", content=body, headers=headers)
                assert r.status_code == 200, r.text
                if i in acked:
                    assert r.json() == {"stored": [acked[i]], "duplicate": True}
            deadline = time.monotonic() + 90
            while c.get("/healthz").json()["inbox_depth"] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert c.get("/healthz").json()["inbox_depth"] == 0

    db = sqlite3.connect(state / DB_NAME)
    events = db.execute("SELECT id, status, rules_json FROM events").fetchall()
    runs = db.execute("SELECT run_id, event_id, rule_name, status FROM runs").fetchall()
    recorded = db.execute("SELECT event_id, COUNT(*) FROM history WHERE what='run recorded' GROUP BY event_id").fetchall()
    db.close()
    assert len(events) == TOTAL
    assert all(status == "matched" and json.loads(rules) == ["churn-any", "churn-record"] for _, status, rules in events)
    # one run per (event, rule with a pipeline): never two, whatever the kill interrupted
    assert len(runs) == TOTAL
    assert {(e, r) for _, e, r, _ in runs} == {(eid, "churn-any") for eid, _, _ in events}
    assert all(run_id == run_id_for(eid, rule) for run_id, eid, rule, _ in runs)
    assert all(count == 1 for _, count in recorded) and len(recorded) == TOTAL
    # no GitHub credentials here: each run failed once, with the reason (or was found mid-dispatch)
    assert {status for *_, status in runs} <= {"failed", "unknown"}
