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


def test_a_models_events_are_claimed_in_the_order_their_transactions_commit(tmp_path, postgres_url):
    """Replica A has stored version 1 of a model and not committed yet (its sequence number is taken)
    when replica B stores version 2: B waits for A's commit, so no worker can claim version 2 before
    version 1 exists. Replica C's delivery of another model does not wait."""
    from sqlalchemy import create_engine

    from pipeline_plugin.inbox.pg_writer import PgGroupCommitter, PutJob, lock_models, put_batch

    inbox = open_inbox(tmp_path / "state", database_url=postgres_url)  # replica B (migrates the schema)
    engines = [create_engine(inbox.url) for _ in range(2)]
    conn = engines[0].connect()  # replica A's writer connection
    replica_c = PgGroupCommitter(engines[1], inbox.path, inbox._put_one)
    transaction = conn.begin()
    try:
        first = PutJob("mlflow", [_event(0)], {}, "now")
        lock_models(conn, [first])  # what A's writer does in its transaction, up to the commit
        put_batch(conn, [first])
        later = inbox.submit_put("mlflow", [_event(1)])
        other = replica_c.submit(PutJob("mlflow", [_event(2, model="fraud-model")], {}, "now")).result(timeout=30)
        time.sleep(0.3)
        assert not later.done(), "version 2 was stored while version 1 was not committed"
        assert [c.event.model for c in inbox.claim("w1", limit=10)] == ["fraud-model"]
        transaction.commit()
        assert not later.result(timeout=30).duplicate
    finally:
        if transaction.is_active:
            transaction.rollback()
        conn.close()
        for engine in engines:
            engine.dispose()
    claimed = inbox.claim("w2", limit=10)
    assert [(c.event.model, c.event.version) for c in claimed] == [("churn-model", "1"), ("churn-model", "2")]
    assert list(other) and not other.duplicate
    inbox.close()
