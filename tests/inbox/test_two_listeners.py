"""Two `serve` replicas behind one address share one PostgreSQL inbox; one is SIGKILLed mid-load.

Each replica has its own empty state dir (as on different hosts); only the database URL is shared.
Deliveries go to both; when one dies the sender retries what it did not acknowledge at the other
(as a load balancer's client would). Afterwards: every acknowledged delivery is stored once, every
run was started at most once at the (loopback) GitHub API and exactly once unless the kill caught it
mid-dispatch, and the killed replica's claimed events were finished by the other after the lease."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

import httpx
from contract_server import Contract, ContractServer, Reply
from services import serve_process, worker_pid, worker_ready

from pipeline_plugin.inbox.postgres import LEASE_ENV, PostgresInbox
from pipeline_plugin.sources.auth import sign

SECRET = "two-listeners-secret"
TOKEN = "two-listeners-token"
TOTAL = 90
MODELS = 6
RULES = """
- name: deploy
  match: {source: mlflow, kind: model_version.created}
  pipeline: {provider: github, repository: acme/models, workflow: deploy-model.yml, ref: main}
"""


def delivery(i: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({
        "entity": "model_version", "action": "created", "timestamp": "2026-11-25T03:26:08+00:00",
        "data": {"name": f"model-{i % MODELS}", "version": str(i // MODELS + 1), "source": f"models:/m-{i}", "tags": {}},
    }).encode()
    did, ts = f"delivery-{i}", str(int(time.time()))
    return body, {"Content-Type": "application/json", "X-MLflow-Delivery-Id": did, "X-MLflow-Timestamp": ts,
                  "X-MLflow-Signature": sign(SECRET.encode(), did, ts, body)}


def github_api() -> ContractServer:
    server = ContractServer([Contract("github.json")], auth=lambda r: r.header("Authorization") in (f"token {TOKEN}", f"Bearer {TOKEN}"))

    def dispatch(req):
        time.sleep(0.15)  # a real API takes a while: the replicas hold claims when one is killed
        return Reply(204)

    server.on("actions/create-workflow-dispatch", dispatch)
    return server


def holds_claim(url: str, pid: int) -> bool:
    """Whether the (worker) process ``pid`` holds a lease on an unfinished event (owners are host:pid:id)."""
    from sqlalchemy import text

    with PostgresInbox(url).engine.connect() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM inbox_events WHERE done = false AND lease_owner LIKE :p"),
                                 {"p": f"%:{pid}:%"}).scalar())


def test_two_listeners_one_killed_store_every_delivery_once_and_start_every_run_once(tmp_path, postgres_url):
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "rules.yml").write_text(RULES)
    acked: dict[int, str] = {}
    with github_api() as api:
        env = {"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET, "GITHUB_API_URL": api.url, "GITHUB_SERVER_URL": "https://github.com",
               "GITHUB_TOKEN": TOKEN, "GH_TOKEN": "", "GITHUB_APP_ID": "", LEASE_ENV: "3",
               "PIPELINE_PLUGIN_HTTP_RETRIES": "1", "PIPELINE_PLUGIN_HTTP_BACKOFF": "0.01"}
        args = ["--database-url", postgres_url]
        with serve_process(tmp_path / "a", triggers, env=env, extra_args=args) as a, \
                serve_process(tmp_path / "b", triggers, env=env, extra_args=args) as b:
            worker_ready(a)  # its worker claims from the first deliveries on: the kill lands mid-load
            worker_ready(b)
            killed = threading.Event()
            lock = threading.Lock()
            retry: list[int] = []

            def sender(replica, mine: list[int]) -> None:
                with httpx.Client(base_url=replica.url, timeout=10) as c:
                    for i in mine:
                        time.sleep(0.02)  # a registry's pace, not a flood: the kill lands while deliveries arrive
                        body, headers = delivery(i)
                        try:
                            r = c.post("/webhooks/mlflow", content=body, headers=headers)
                        except httpx.HTTPError:
                            assert killed.is_set() and replica is a
                            with lock:
                                retry.append(i)
                            continue
                        assert r.status_code == 200, r.text
                        with lock:
                            acked[i] = r.json()["stored"][0]

            threads = [threading.Thread(target=sender, args=(a, list(range(0, TOTAL, 2)))),
                       threading.Thread(target=sender, args=(b, list(range(1, TOTAL, 2))))]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while len(acked) < TOTAL // 3 and time.monotonic() < deadline:
                time.sleep(0.005)
            # kill while replica a holds a claim (its worker dispatches one at a time; between two
            # it may hold none): the takeover below is then certain, not a matter of timing
            a_worker = worker_pid(a.process.pid)
            while not holds_claim(postgres_url, a_worker) and time.monotonic() < deadline:
                time.sleep(0.002)
            os.killpg(a.process.pid, signal.SIGKILL)  # the replica's host dies: listener and worker, no handler runs
            killed.set()
            a.process.wait()
            for t in threads:
                t.join(timeout=60)
            assert retry, "the kill did not land mid-load"
            sender(b, sorted(retry))  # the client retries at the other replica behind the address
            assert sorted(acked) == list(range(TOTAL))
            # the survivor finishes everything, the dead replica's claims once their lease expired
            with httpx.Client(base_url=b.url, timeout=10) as c:
                deadline = time.monotonic() + 90
                while (health := c.get("/healthz").json())["inbox_depth"] and time.monotonic() < deadline:
                    time.sleep(0.3)
                assert health["inbox_depth"] == 0 and health["inbox"]["backend"] == "postgresql" and health["inbox"]["ok"]
        starts = Counter(call.body["inputs"]["event-id"] for call in api.calls("actions/create-workflow-dispatch"))
        api.assert_clean()

    inbox = PostgresInbox(postgres_url)
    events = inbox.list()
    assert len(events) == TOTAL and {e.id for e in events} == set(acked.values())  # each delivery stored once
    assert all(e.done and e.status == "matched" for e in events)
    runs = inbox.runs()
    assert len(runs) == TOTAL and len({(r.event_id, r.rule_name) for r in runs}) == TOTAL
    assert max(starts.values()) == 1, [k for k, n in starts.items() if n > 1]  # no run started twice
    status = Counter(r.status for r in runs)
    # a run the kill caught between "dispatching" and the answer cannot be asked again safely: it is
    # "unknown" (started at most once); every other run was started exactly once
    assert set(status) <= {"dispatched", "unknown"} and status["unknown"] <= 2, status
    assert len(starts) >= status["dispatched"]
    taken = [e.id for e in events if "lease taken over" in [h["what"] for h in inbox.get(e.id).history]]
    assert taken, "the killed replica held no claim that the other took over"
    # ordering: each model's events were processed in version order
    for m in range(MODELS):
        mine = [e for e in events if e.event.model == f"model-{m}"]
        done_at = [min(h["at"] for h in inbox.get(e.id).history if h["what"] == "matched") for e in mine]
        versions = [e.event.version for e in sorted(mine, key=lambda e: done_at[mine.index(e)])]
        assert versions == sorted(versions, key=int), (m, versions)
