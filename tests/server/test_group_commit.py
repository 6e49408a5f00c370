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


def deliver_while_blocked(listener: Listener, unblock, settle: float = 0.3, counted: tuple = ()) -> tuple[list[str], int]:
    """N concurrent deliveries to ``listener`` while another session keeps its inbox from committing:
    every one is verified and queued (it reached ``counted``, an (object, method name) pair; by
    default the inbox's ``submit_put``), none is answered until ``unblock()``, then all are 200
    with distinct ids. Returns the stored ids and the commits the inbox's writer thread used."""
    inbox = listener.inbox
    submitted = []
    target, name = counted or (inbox, "submit_put")
    submit = getattr(target, name)

    def counting_submit(*args, **kwargs):
        submitted.append(1)
        return submit(*args, **kwargs)

    setattr(target, name, counting_submit)
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


def test_deliveries_of_a_locked_database_go_to_the_writer_thread_and_share_its_commits(tmp_path, monkeypatch):
    monkeypatch.delenv("PIPELINE_PLUGIN_DATABASE_URL", raising=False)  # the SQLite inbox of the state dir
    listener = Listener(tmp_path / "state", environ={"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET}, start_worker=False)
    # another writer (e.g. a CLI command) holds the database's write lock: nothing can commit, so
    # the loop's writer hands the deliveries to the inbox's writer thread, which waits for the lock
    blocker = sqlite3.connect(listener.inbox.path, isolation_level=None, timeout=30)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        ids, commits = deliver_while_blocked(listener, lambda: blocker.execute("COMMIT"), settle=0.2,
                                             counted=(listener.inbox._committer, "submit_here"))
    finally:
        blocker.close()
    assert listener._writer.handed_over == N and listener._writer.batches == 0
    # operators see it: the waits for the lock and the hand-over are counted in /metrics
    metrics = {line.split(" ")[0]: float(line.split(" ")[1]) for line in listener.metrics.render().decode().splitlines()
               if line.startswith("pipeline_plugin_inbox_")}
    assert metrics["pipeline_plugin_inbox_handed_over_total"] == N, metrics
    assert metrics["pipeline_plugin_inbox_lock_waits_total"] >= 1, metrics
    assert metrics["pipeline_plugin_inbox_lock_wait_seconds_total"] >= 0.04, metrics  # BUSY_PATIENCE: 0.05 s
    # the first delivery's transaction waited for the lock; all the others came while it did and
    # went into one more transaction: 2 commits (fsyncs) for N deliveries, not N
    assert commits <= 2, commits
    fresh = sqlite3.connect(listener.inbox.path)
    try:
        assert {r[0] for r in fresh.execute("SELECT id FROM events")} == set(ids)
    finally:
        fresh.close()


def test_concurrent_deliveries_share_one_fsync_and_none_is_answered_before_it(tmp_path, monkeypatch):
    """The loop's writer: a batch is committed, then its WAL is flushed (fdatasync) by the syncer
    thread, and only then answered; what arrives meanwhile goes into the next batch, one fsync."""
    import threading

    from pipeline_plugin.inbox import loop_writer

    monkeypatch.delenv("PIPELINE_PLUGIN_DATABASE_URL", raising=False)
    listener = Listener(tmp_path / "state", environ={"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET}, start_worker=False)
    gate, entered, real = threading.Event(), threading.Event(), loop_writer.os.fdatasync
    flushed: list[int] = []

    def held_fdatasync(fd: int) -> None:
        entered.set()
        assert gate.wait(60), "the test never opened the gate"
        real(fd)
        flushed.append(fd)

    monkeypatch.setattr(loop_writer.os, "fdatasync", held_fdatasync)

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(listener))
        async with httpx.AsyncClient(transport=transport, base_url="http://listener") as client:
            def post(i: int) -> asyncio.Future:
                body, headers = delivery(i)
                return asyncio.ensure_future(client.post("/webhooks/mlflow", content=body, headers=headers))

            tasks = [post(0)]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not entered.is_set():
                await asyncio.sleep(0.01)
            assert entered.is_set(), "the first delivery's batch never reached its fsync"
            tasks += [post(i) for i in range(1, N)]
            writer = listener._writer
            while time.monotonic() < deadline and len(writer.queue) < N - 1:
                await asyncio.sleep(0.01)
            assert (writer.stored, len(writer.queue)) == (1, N - 1)
            await asyncio.sleep(0.2)
            # the first batch is committed and waits for its fsync; the rest wait for the next batch
            assert not any(t.done() for t in tasks), [t.result().status_code for t in tasks if t.done()]
            assert writer.batches == 1 and flushed == []
            gate.set()
            return await asyncio.gather(*tasks)

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * N, [r.text for r in responses if r.status_code != 200]
    writer = listener._writer
    assert (writer.batches, writer.syncs, len(flushed), writer.handed_over) == (2, 2, 2, 0)
    assert listener.inbox._committer.commits == 0  # the writer thread was never needed
    text = listener.metrics.render().decode()
    assert "pipeline_plugin_inbox_lock_waits_total 0.0" in text and "pipeline_plugin_inbox_handed_over_total 0.0" in text
    ids = [r.json()["stored"][0] for r in responses]
    fresh = sqlite3.connect(listener.inbox.path)
    try:
        assert {r[0] for r in fresh.execute("SELECT id FROM events")} == set(ids)
        assert fresh.execute("SELECT COUNT(*) FROM history WHERE what = 'received'").fetchone()[0] == N
    finally:
        fresh.close()


def test_a_failed_fsync_is_a_503_and_the_retry_is_answered_with_the_stored_id(tmp_path, monkeypatch):
    from pipeline_plugin.inbox import loop_writer

    monkeypatch.delenv("PIPELINE_PLUGIN_DATABASE_URL", raising=False)
    listener = Listener(tmp_path / "state", environ={"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET}, start_worker=False)
    real = loop_writer.os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    body, headers = delivery(0)

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(listener))
        async with httpx.AsyncClient(transport=transport, base_url="http://listener") as client:
            return await client.post("/webhooks/mlflow", content=body, headers=headers)

    monkeypatch.setattr(loop_writer.os, "fdatasync", failing)
    first = asyncio.run(post())
    assert first.status_code == 503 and first.json()["retry"] is True, first.text
    assert "flush" in first.json()["message"] and "send it again" in first.json()["message"]
    monkeypatch.setattr(loop_writer.os, "fdatasync", real)
    again = asyncio.run(post())  # a new loop (and a writer of its own)
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True  # committed before the failed flush: the same id, once
    assert len(again.json()["stored"]) == 1


def test_while_serving_the_workers_write_through_the_loops_writer(tmp_path, monkeypatch):
    """One writer per process while serve runs: the worker threads' claims and outcomes are run by
    the loop's writer (in its batches, answered after its fsync), never by a second connection
    that would wait on the first; after shutdown the writer thread takes them again."""
    from starlette.testclient import TestClient

    from pipeline_plugin.rules import load_rules

    monkeypatch.delenv("PIPELINE_PLUGIN_DATABASE_URL", raising=False)
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "churn.yml").write_text("name: churn-seen\nmatch: {model: churn-*}\n")
    listener = Listener(tmp_path / "state", rules=load_rules(triggers), rules_dir=triggers,
                        environ={"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET})
    committer = listener.inbox._committer
    with TestClient(create_app(listener)) as client:
        for i in range(6):
            body, headers = delivery(i)
            assert client.post("/webhooks/mlflow", content=body, headers=headers).status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(e.status == "pending" for e in listener.inbox.list()):
            time.sleep(0.05)
        assert [e.status for e in listener.inbox.list()] == ["matched"] * 6
        assert committer.delegate is listener._writer
        assert committer.commits == 0  # claims and outcomes went to the loop's writer too
        assert listener._writer.batches >= 2 and listener._writer.handed_over == 0
    assert committer.delegate is None and listener._writer.closed
    replayed = listener.inbox.list()[0].id  # after shutdown: the writer thread writes again
    listener.inbox.set_outcome(replayed, "ignored", "test")
    assert committer.commits == 1
