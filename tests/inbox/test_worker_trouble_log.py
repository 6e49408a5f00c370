"""Listeners on a shared PostgreSQL inbox: while the database refuses connections the worker logs
one warning line saying so (not a traceback on every retry, not one per worker thread), and one
line when the inbox answers again; the pending event is then processed."""

from __future__ import annotations

import logging
import threading
import time

import psycopg

from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.inbox.postgres import PostgresInbox
from pipeline_plugin.worker import Worker


def wait_for(predicate, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_database_that_refuses_connections_is_one_warning_and_one_recovery(postgres, postgres_url, caplog):
    caplog.set_level(logging.INFO, logger="pipeline_plugin.worker")
    name = postgres_url.rsplit("/", 1)[1]
    (event_id,) = PostgresInbox(postgres_url).put("mlflow", [ModelVersionEvent.from_dict(
        {"source": "mlflow", "kind": "model_version.created", "model": "churn", "version": "1", "delivery_id": "d-1"})])
    workers = [Worker(PostgresInbox(postgres_url), rules=[], batch=1) for _ in range(2)]
    stop = threading.Event()
    failures = []
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        threads = [threading.Thread(target=w.run_forever, args=(stop,), kwargs={"poll": 0.2}) for w in workers]
        try:
            for t in threads:
                t.start()
            # both workers retry several times (each about every 0.4 s) while the database refuses
            assert wait_for(lambda: len([r for r in caplog.records if "cannot store" in r.getMessage()]) >= 1)
            time.sleep(2)
            failures = [r for r in caplog.records if r.name == "pipeline_plugin.worker" and r.levelno >= logging.WARNING]
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        try:
            assert wait_for(lambda: PostgresInbox(postgres_url).get(event_id).status == "unmatched")
            assert wait_for(lambda: any("can store again" in r.getMessage() for r in caplog.records))
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
    assert len(failures) == 1, [r.getMessage() for r in failures]
    (line,) = failures
    assert line.levelno == logging.WARNING and line.exc_info is None
    text = line.getMessage()
    assert text.startswith("inbox cannot store: the database does not answer (database postgresql+psycopg://"), text
    password = postgres_url.split("@")[0].rsplit(":", 1)[1]
    assert password not in caplog.text
    back = [r.getMessage() for r in caplog.records if "can store again" in r.getMessage()]
    assert len(back) == 1 and "the database does not answer" in back[0]
    assert not any(r.exc_info for r in caplog.records)
