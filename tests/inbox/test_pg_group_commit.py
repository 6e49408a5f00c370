"""The PostgreSQL inbox groups concurrent deliveries into shared commits, answers none before the
commit holding it, and a delivery PostgreSQL refuses fails alone: counted in commits, never timed."""

from __future__ import annotations

import time

import psycopg

from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.inbox.select import open_inbox
from pipeline_plugin.server import Listener
from tests.server.test_group_commit import SECRET, deliver_while_blocked

N = 24


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _block_event_inserts(url: str) -> psycopg.Connection:
    """Another session holds a lock that lets the writer read but not insert events: the first
    batch waits for it, and every delivery arriving meanwhile queues for the next one."""
    blocker = psycopg.connect(_plain(url))
    blocker.execute("LOCK TABLE inbox_events IN EXCLUSIVE MODE")
    return blocker


def test_concurrent_deliveries_share_postgres_commits_and_wait_for_theirs(tmp_path, monkeypatch, postgres_url):
    monkeypatch.setenv("PIPELINE_PLUGIN_DATABASE_URL", postgres_url)
    listener = Listener(tmp_path / "state", environ={"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET}, start_worker=False)
    assert listener.inbox.backend == "postgresql"
    committer = listener.inbox._committer
    blocker = _block_event_inserts(postgres_url)
    try:
        ids, commits = deliver_while_blocked(listener, blocker.commit)
    finally:
        blocker.close()
    # the first batch waited for the lock; all the others came meanwhile and shared one more commit
    assert commits <= 2, commits
    assert committer.slow_batches == 0  # new deliveries only: the set-wise statements, no savepoints
    with psycopg.connect(_plain(postgres_url)) as fresh:
        assert {r[0] for r in fresh.execute("SELECT id FROM inbox_events")} == set(ids)
        assert fresh.execute("SELECT COUNT(*) FROM inbox_deliveries").fetchone()[0] == N
        received = fresh.execute("SELECT COUNT(*) FROM inbox_history WHERE what = 'received'").fetchone()[0]
        assert received == N


def _event(i: int, model: str = "churn-model") -> ModelVersionEvent:
    return ModelVersionEvent.from_dict({
        "source": "mlflow", "kind": "model_version.created", "model": model, "version": str(i + 1),
        "delivery_id": f"d-{i}", "registry": {"tracking_uri": "http://mlflow:5000"},
    })


def test_a_refused_delivery_fails_alone_and_a_repeat_is_stored_once(tmp_path, postgres_url):
    inbox = open_inbox(tmp_path / "state", database_url=postgres_url)
    committer = inbox._committer
    first = inbox.put("mlflow", [_event(100)])  # stored before: its repeat in the batch is a duplicate
    commits_before, slow_before = committer.commits, committer.slow_batches
    blocker = _block_event_inserts(postgres_url)
    try:
        futures = [inbox.submit_put("mlflow", [_event(i)]) for i in range(8)]
        # PostgreSQL text holds no NUL character: this one delivery cannot be stored
        futures.append(inbox.submit_put("mlflow", [_event(8, model="bad\x00model")]))
        futures.append(inbox.submit_put("mlflow", [_event(100)]))  # the sender's retry
        futures.append(inbox.submit_put("mlflow", [_event(3)]))  # the same delivery twice in one batch
        time.sleep(0.3)
        assert not any(f.done() for f in futures)
    finally:
        blocker.commit()
        blocker.close()
    results = [f.exception(timeout=60) or f.result() for f in futures]
    assert isinstance(results[8], Exception) and "NUL" in str(results[8]), results[8]
    assert [r.duplicate for r in results[:8]] == [False] * 8
    assert results[9].duplicate and list(results[9]) == list(first)
    assert results[10].duplicate and list(results[10]) == list(results[3])
    assert committer.commits - commits_before <= 2, committer.commits - commits_before
    assert committer.slow_batches - slow_before == 1  # the batch holding the refused one, a savepoint each
    with psycopg.connect(_plain(postgres_url)) as fresh:
        stored = {r[0] for r in fresh.execute("SELECT id FROM inbox_events")}
        assert stored == {r[0] for r in results[:8]} | set(first)
        assert fresh.execute("SELECT COUNT(*) FROM inbox_deliveries").fetchone()[0] == 9
    inbox.close()


def test_two_writers_putting_the_same_deliveries_store_each_once(tmp_path, postgres_url):
    """Two replicas' writers (each its own engine and connection) get the same deliveries in
    opposite orders, batched: every put succeeds, both answer the same event ids, each change is
    stored once and counted new by one replica only."""
    from sqlalchemy import create_engine

    from pipeline_plugin.inbox.pg_writer import PgGroupCommitter, PutJob

    inbox = open_inbox(tmp_path / "state", database_url=postgres_url)  # migrates the schema
    engines = [create_engine(inbox.url) for _ in range(2)]
    writers = [PgGroupCommitter(engine, inbox.path, inbox._put_one) for engine in engines]
    events = [_event(i) for i in range(40)]
    try:
        futures: list[list] = [[], []]
        for i in range(len(events)):
            for w, order in ((0, events), (1, events[::-1])):
                futures[w].append(writers[w].submit(PutJob("mlflow", [order[i]], {"replica": w}, "now")))
        results = [[f.result(timeout=120) for f in fs] for fs in futures]
    finally:
        for engine in engines:
            engine.dispose()
    by_delivery = [dict(zip([e.delivery_id for e in order], res)) for order, res in
                   ((events, results[0]), (events[::-1], results[1]))]
    for e in events:
        a, b = by_delivery[0][e.delivery_id], by_delivery[1][e.delivery_id]
        assert list(a) == list(b)
        assert not (a.duplicate and b.duplicate) and (a.duplicate or b.duplicate), e.delivery_id  # one stored it
    assert sum(w.commits for w in writers) < 2 * len(events)
    with psycopg.connect(_plain(postgres_url)) as fresh:
        assert fresh.execute("SELECT COUNT(*) FROM inbox_events").fetchone()[0] == len(events)
        assert fresh.execute("SELECT COUNT(*) FROM inbox_deliveries").fetchone()[0] == len(events)
        assert fresh.execute("SELECT COUNT(*) FROM inbox_history WHERE what = 'received'").fetchone()[0] == len(events)
    inbox.close()


def _replica_storing(inbox, event: ModelVersionEvent):
    """Replica A's writer in the middle of its transaction: ``event`` inserted (its sequence number
    taken), not committed. Returns (connection, transaction, engine)."""
    from sqlalchemy import create_engine

    from pipeline_plugin.inbox.pg_writer import PutJob, lock_models, put_batch

    engine = create_engine(inbox.url)
    conn = engine.connect()
    transaction = conn.begin()
    job = PutJob("mlflow", [event], {}, "now")
    lock_models(conn, [job])  # what a writer does in its transaction, up to the commit
    put_batch(conn, [job])
    return conn, transaction, engine


def test_a_models_later_version_is_not_claimed_while_another_replica_commits_an_earlier_one(tmp_path, postgres_url):
    """Replica A has stored version 1 of a model and not committed yet when replica B stores
    version 2 (committed first, with the later sequence number): B does not wait for A, and a
    claim meanwhile waits for A's commit and takes no version of that model before version 1."""
    from concurrent.futures import ThreadPoolExecutor

    inbox = open_inbox(tmp_path / "state", database_url=postgres_url)  # replica B (migrates the schema)
    conn, transaction, engine = _replica_storing(inbox, _event(0))
    try:
        assert not inbox.put("mlflow", [_event(1)]).duplicate  # B does not wait for A
        inbox.put("mlflow", [_event(2, model="fraud-model")])
        with ThreadPoolExecutor(1) as pool:
            claiming = pool.submit(inbox.claim, "w1", 10)
            time.sleep(0.5)
            assert not claiming.done()  # waits for A's commit
            transaction.commit()
            first = claiming.result(timeout=30)
    finally:
        conn.close()
        engine.dispose()
    # it had read version 2 alone: it leaves the model to the next claim
    assert [c.event.model for c in first] == ["fraud-model"]
    claimed = inbox.claim("w2", limit=10)
    assert [(c.event.model, c.event.version) for c in claimed] == [("churn-model", "1"), ("churn-model", "2")]
    inbox.close()


def test_a_claim_that_read_before_an_earlier_version_was_committed_does_not_take_the_later_one(
        tmp_path, postgres_url, monkeypatch):
    """Replica A commits version 1 just after a claim read the model's unfinished events (it saw
    version 2 only): the claim takes neither; the next one takes both, in order."""
    inbox = open_inbox(tmp_path / "state", database_url=postgres_url)
    conn, transaction, engine = _replica_storing(inbox, _event(0))
    inbox.put("mlflow", [_event(1)])
    run = inbox._x

    def commit_after_the_read(c, sql, **params):
        result = run(c, sql, **params)
        if "WITH RECURSIVE heads" in str(sql) and transaction.is_active:
            rows = result.all()
            assert [r.model for r in rows] == ["churn-model"] and len(rows) == 1  # version 2 alone
            transaction.commit()
            return _Rows(rows)
        return result

    monkeypatch.setattr(inbox, "_x", commit_after_the_read)
    try:
        assert inbox.claim("w1", limit=10) == []
    finally:
        conn.close()
        engine.dispose()
    monkeypatch.undo()
    claimed = inbox.claim("w2", limit=10)
    assert [c.event.version for c in claimed] == ["1", "2"]
    inbox.close()


class _Rows:
    def __init__(self, rows: list) -> None:
        self.rows = rows

    def all(self) -> list:
        return self.rows


def test_a_claim_that_waits_too_long_for_a_writer_claims_nothing_and_says_why(tmp_path, postgres_url, monkeypatch,
                                                                                caplog):
    """A writer's transaction stays open past the claim's patience: the claim gives up without
    an error (the worker claims again later) and the log says what holds it; then it goes on."""
    import logging

    from pipeline_plugin.inbox import postgres

    monkeypatch.setattr(postgres, "CLAIM_LOCK_TIMEOUT", "200ms")
    inbox = open_inbox(tmp_path / "state", database_url=postgres_url)
    inbox.put("mlflow", [_event(1)])
    conn, transaction, engine = _replica_storing(inbox, _event(0))
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline_plugin.inbox"):
            assert inbox.claim("w1", limit=10) == []
        assert "waited 200ms" in caplog.text and "pg_locks" in caplog.text
        transaction.commit()
    finally:
        conn.close()
        engine.dispose()
    # stored version 2 first, then (A's) version 1: in the order they were numbered
    assert [c.event.version for c in inbox.claim("w1", limit=10)] == ["2", "1"]
    inbox.close()
