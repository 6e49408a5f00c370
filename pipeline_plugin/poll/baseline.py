"""The first poll of a registry is a baseline: what the registry holds already starts no pipeline.

Turning polling on for a registry with 200 old versions must not start 200 deployments, and an
MLflow alias or an OCI tag carries no date that ``since`` could filter. So the first successful
poll of a (source, registry) -- one that has no row in the poll state -- stores every listed
version the inbox does not hold yet as an event that is already decided: status ``ignored``,
reason ``existed before polling started at <T>; ...``, no work left. Being stored, the same
version announced again (a later poll, the registry's webhook, another replica) is a duplicate
and starts nothing either; ``pipeline-plugin events replay <id>`` deploys one on purpose.

The poll state (one row per ``(source, registry)``: when it was first polled, how many versions
the baseline recorded, and whether ``since`` was set instead) lives next to the inbox: the table
``poll_state`` of the SQLite inbox (created when first needed, as the leases table), or
``inbox_poll_state`` in PostgreSQL (migration 0003). A row is written after the first poll that
succeeds, so every later poll -- after a restart, on another replica, however long the poller
was down -- announces what is new since as usual.

An explicit ``since`` replaces the baseline: versions dated at or after it are announced (and
undated ones, as before), earlier ones skipped.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable

from ..events import ModelVersionEvent

SQLITE_TABLE = """
CREATE TABLE IF NOT EXISTS poll_state (
    source TEXT NOT NULL,
    registry TEXT NOT NULL,
    first_poll_at TEXT NOT NULL,
    mode TEXT NOT NULL,
    baseline INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, registry)
)
"""
#: events stored per transaction while recording a baseline
BATCH = 200


def reason(at: str) -> str:
    return (f"existed before polling started at {at}; set since: to deploy older versions "
            "(or `pipeline-plugin events replay <id>` for one)")


def _ignored_row(event: ModelVersionEvent, why: str, now: str) -> dict[str, Any]:
    from ..inbox import _event_id_for_key

    key = event.dedupe_key()
    return dict(id=_event_id_for_key(key), dedupe_key=key, source=event.source, kind=event.kind, model=event.model,
                version=event.version, registry_key=event.registry_key(), delivery_id=event.delivery_id,
                event_json=event.to_json(), received_at=now, status="ignored", reason=why, rules_json="[]",
                done=True, processed_at=now)


class SqliteState:
    """Poll state and baseline events in the SQLite inbox (through its own write path)."""

    def __init__(self, inbox: Any) -> None:
        self.inbox = inbox

    def get(self, source: str, registry: str) -> dict[str, Any] | None:
        try:
            row = self.inbox._db().execute(
                "SELECT first_poll_at, mode, baseline FROM poll_state WHERE source=? AND registry=?",
                (source, registry)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        return None if row is None else {"first_poll_at": row[0], "mode": row[1], "baseline": row[2]}

    def mark(self, source: str, registry: str, at: str, mode: str, baseline: int) -> None:
        def _job(db: sqlite3.Connection) -> None:
            db.execute(SQLITE_TABLE)
            db.execute("INSERT OR IGNORE INTO poll_state(source, registry, first_poll_at, mode, baseline)"
                       " VALUES (?,?,?,?,?)", (source, registry, at, mode, baseline))

        self.inbox._write(_job)

    def record(self, delivery_source: str, events: list[ModelVersionEvent], why: str, now: str,
               meta: dict[str, Any]) -> int:
        """Store ``events`` as ignored (those the inbox does not hold); how many were stored."""
        def _job(db: sqlite3.Connection) -> int:
            stored = 0
            for event in events:
                row = _ignored_row(event, why, now)
                if db.execute("SELECT 1 FROM events WHERE dedupe_key=?", (row["dedupe_key"],)).fetchone():
                    continue
                if db.execute("SELECT 1 FROM deliveries WHERE source=? AND delivery_id=?",
                              (delivery_source, event.delivery_id)).fetchone():
                    continue
                db.execute(
                    "INSERT INTO events(id, dedupe_key, source, kind, model, version, registry_key, delivery_id,"
                    " event_json, received_at, status, reason, rules_json, done, processed_at)"
                    " VALUES (:id,:dedupe_key,:source,:kind,:model,:version,:registry_key,:delivery_id,:event_json,"
                    ":received_at,:status,:reason,:rules_json,1,:processed_at)", row)
                db.execute("INSERT OR IGNORE INTO deliveries(source, delivery_id, received_at, event_id, meta_json)"
                           " VALUES (?,?,?,?,?)", (delivery_source, event.delivery_id, now, row["id"], json.dumps(meta)))
                for what, data in (("received", {"delivery_id": event.delivery_id, **meta}),
                                   ("ignored", {"reason": why, "rules": []})):
                    db.execute("INSERT INTO history(event_id, at, what, data_json) VALUES (?,?,?,?)",
                               (row["id"], now, what, json.dumps(data, sort_keys=True)))
                stored += 1
            return stored

        return self.inbox._write(_job)


class PostgresState:
    """Poll state and baseline events in the shared PostgreSQL inbox (the store's engine)."""

    def __init__(self, inbox: Any) -> None:
        from ..store.engine import engine_for

        self.engine = engine_for(inbox.url)  # migrated to head: inbox_poll_state exists

    def get(self, source: str, registry: str) -> dict[str, Any] | None:
        from sqlalchemy import select

        from ..store.schema import inbox_poll_state as t

        with self.engine.connect() as conn:
            row = conn.execute(select(t.c.first_poll_at, t.c.mode, t.c.baseline)
                               .where(t.c.source == source, t.c.registry == registry)).first()
        return None if row is None else {"first_poll_at": row[0], "mode": row[1], "baseline": row[2]}

    def mark(self, source: str, registry: str, at: str, mode: str, baseline: int) -> None:
        from sqlalchemy.dialects.postgresql import insert

        from ..store.schema import inbox_poll_state as t

        with self.engine.begin() as conn:
            conn.execute(insert(t).values(source=source, registry=registry, first_poll_at=at, mode=mode,
                                          baseline=baseline).on_conflict_do_nothing())

    def record(self, delivery_source: str, events: list[ModelVersionEvent], why: str, now: str,
               meta: dict[str, Any]) -> int:
        from sqlalchemy.dialects.postgresql import insert

        from ..store.schema import inbox_deliveries, inbox_events, inbox_history

        stored = 0
        with self.engine.begin() as conn:
            for event in events:
                row = _ignored_row(event, why, now)
                inserted = conn.execute(insert(inbox_events).values(**row).on_conflict_do_nothing()
                                        .returning(inbox_events.c.id)).scalar()
                if inserted is None:  # stored already (a webhook, another replica): it stays as it is
                    continue
                conn.execute(insert(inbox_deliveries).values(
                    source=delivery_source, delivery_id=event.delivery_id, received_at=now, event_id=row["id"],
                    meta_json=json.dumps(meta)).on_conflict_do_nothing())
                conn.execute(insert(inbox_history), [
                    {"event_id": row["id"], "at": now, "what": "received",
                     "data_json": json.dumps({"delivery_id": event.delivery_id, **meta}, sort_keys=True)},
                    {"event_id": row["id"], "at": now, "what": "ignored",
                     "data_json": json.dumps({"reason": why, "rules": []}, sort_keys=True)}])
                stored += 1
        return stored


def state_for(inbox: Any) -> SqliteState | PostgresState:
    return PostgresState(inbox) if getattr(inbox, "backend", "sqlite") == "postgresql" else SqliteState(inbox)


def record_baseline(state: Any, delivery_source: str, events: Iterable[ModelVersionEvent], at: str,
                    meta: dict[str, Any]) -> int:
    """Store ``events`` as ignored, ``BATCH`` per transaction; how many the inbox did not hold."""
    why = reason(at)
    events = list(events)
    return sum(state.record(delivery_source, events[i:i + BATCH], why, at, meta) for i in range(0, len(events), BATCH))
