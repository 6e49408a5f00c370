"""Claims read a small index of the open events (SQLite inbox): with a backlog of thousands, a claim
of 64 no longer sorts every open event and reads each one's row. An inbox written by an earlier
release (without the index) gets it when opened, and claims keep their order."""

from __future__ import annotations

import sqlite3

from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.inbox import Inbox


def ev(model: str, version: int) -> ModelVersionEvent:
    return ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": model,
                                        "version": str(version), "delivery_id": f"d-{model}-{version}",
                                        "registry": {"tracking_uri": "http://mlflow:5000"}})


def claim_plan(inbox: Inbox) -> str:
    """The query plan of the read a claim makes (the statement captured as SQLite ran it)."""
    seen: list[str] = []
    db = inbox._db()
    db.set_trace_callback(seen.append)
    try:
        inbox.claim("plan-check", limit=1)
    finally:
        db.set_trace_callback(None)
    read = next(sql for sql in seen if sql.startswith("SELECT id, lease_owner"))
    return " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + read))


def test_an_inbox_without_the_index_gets_it_on_open_and_claims_read_only_the_index(tmp_path):
    state = tmp_path / "state"
    inbox = Inbox(state)
    for version in range(1, 4):
        for model in ("a", "b"):
            inbox.put("mlflow", [ev(model, version)])
    inbox.close()
    with sqlite3.connect(state / "inbox.sqlite3") as db:  # as an earlier release wrote it
        db.execute("DROP INDEX events_open")
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1

    reopened = Inbox(state)
    with sqlite3.connect(state / "inbox.sqlite3") as db:
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name='events_open'").fetchone()
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1  # the file stays readable by earlier releases
    plan = claim_plan(reopened)  # its claim took a's oldest event, a1
    assert "COVERING INDEX events_open" in plan and "TEMP B-TREE" not in plan, plan
    # order per model is kept: while a1 is held, a2 and a3 wait; b's events come in version order
    claimed = reopened.claim("w1", limit=10)
    assert [(c.event.model, c.event.version) for c in claimed] == [("b", "1"), ("b", "2"), ("b", "3")]
