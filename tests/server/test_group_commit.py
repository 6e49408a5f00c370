"""Concurrent deliveries share commits (one fsync for many), and none is acknowledged before the
transaction holding it is committed: counted in commits, never timed."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import httpx

from pipeline_plugin.server import Listener, create_app
from pipeline_plugin.sources.auth import sign

SECRET = "s3cr3t-for-group-commit"
N = 24


def delivery(i: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({
        "entity": "model_version",
        "action": "created",
        "timestamp": "2026-11-25T03:26:08.314052+00:00",
        "data": {"name": "churn-model", "version": str(i + 1), "source": f"models:/m-{i:032d}", "run_id": None,
                 "tags": {}, "description": None},
    }).encode()
    did, ts = f"d-{i}", str(int(time.time()))
    return body, {"Content-Type": "application/json", "X-MLflow-Delivery-Id": did, "X-MLflow-Timestamp": ts,
                  "X-MLflow-Signature": sign(SECRET.encode(), did, ts, body)}


def deliver_while_blocked(listener: Listener, unblock, settle: float = 0.3) -> tuple[list[str], int]:
    """N concurrent deliveries to ``listener`` while another session keeps its inbox from committing:
    every one is verified and queued, none is answered until ``unblock()``, then all are 200 with
    distinct ids. Returns the stored ids and the commits the inbox's writer used."""
    inbox = listener.inbox
    submitted = []
    submit_put = inbox.submit_put

    def counting_submit(*args, **kwargs):
        submitted.append(1)
        return submit_put(*args, **kwargs)

    inbox.submit_put = counting_submit
    committer = inbox._committer
    commits_before = committer.commits

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(listener))
        async with httpx.AsyncClient(transport=transport, base_url="http://listener") as client:
            tasks = [asyncio.ensure_future(client.post("/webhooks/mlflow", content=body, headers=headers))
                     for body, headers in map(delivery, range(N))]
            deadline = time.monotonic() + 60
            while len(submitted) < N and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert len(submitted) == N, f"only {len(submitted)} of {N} deliveries reached the inbox"
            await asyncio.sleep(settle)
            # every delivery is verified and queued, and none may be acknowledged: nothing is committed
            assert not any(t.done() for t in tasks), [t.result().status_code for t in tasks if t.done()]
            unblock()
            return await asyncio.gather(*tasks)

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * N, [r.text for r in responses if r.status_code != 200]
    ids = [r.json()["stored"][0] for r in responses]
    assert len(set(ids)) == N
    return ids, committer.commits - commits_before


def test_concurrent_deliveries_share_commits_and_wait_for_theirs(tmp_path, monkeypatch):
    monkeypatch.delenv("PIPELINE_PLUGIN_DATABASE_URL", raising=False)  # the SQLite inbox of the state dir
    listener = Listener(tmp_path / "state", environ={"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET}, start_worker=False)
    # another writer (e.g. a CLI command) holds the database's write lock: nothing can commit
    blocker = sqlite3.connect(listener.inbox.path, isolation_level=None, timeout=30)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        ids, commits = deliver_while_blocked(listener, lambda: blocker.execute("COMMIT"), settle=0.2)
    finally:
        blocker.close()
    # the first delivery's transaction waited for the lock; all the others came while it did and
    # went into one more transaction: 2 commits (fsyncs) for N deliveries, not N
    assert commits <= 2, commits
    fresh = sqlite3.connect(listener.inbox.path)
    try:
        assert {r[0] for r in fresh.execute("SELECT id FROM events")} == set(ids)
    finally:
        fresh.close()
