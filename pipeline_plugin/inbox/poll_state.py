"""Per-registry poll state and already-decided events, in the inbox's own database.

``state_for(inbox)`` gives the poll state of either inbox backend:

* ``get``/``mark``: one row per ``(source, registry)``: when polling first succeeded, whether it
  took a baseline or ``since``, and the models it covers (``models_json``: a JSON list of names,
  ``"all"``, or NULL in a row written before it was kept); ``set_models`` changes them, ``rename``
  moves a row to another key;
* ``models_held``: the models the inbox holds events of, from one source;
* ``record``: events stored as already decided (status ``ignored`` with a reason, no work left),
  each with its delivery and history, skipping any the inbox holds already. It writes the same rows
  as ``Inbox.put`` does, decided in the same transaction, so no worker can claim one in between:
  keep the two in step when the event columns change.

The SQLite table ``poll_state`` is created (or given ``models_json``) when first written (as the
leases table); PostgreSQL's ``inbox_poll_state`` comes from store migrations 0003 and 0004. The
poller's baseline (``poll.baseline``) uses it.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..events import ModelVersionEvent
from .sqlite_put import event_id_for_key as _event_id_for_key

SQLITE_TABLE = """
CREATE TABLE IF NOT EXISTS poll_state (
    source TEXT NOT NULL,
    registry TEXT NOT NULL,
    first_poll_at TEXT NOT NULL,
    mode TEXT NOT NULL,
    baseline INTEGER NOT NULL DEFAULT 0,
    models_json TEXT,
    PRIMARY KEY (source, registry)
)
"""


def _sqlite_table(db: sqlite3.Connection) -> None:
    """The table, with ``models_json`` also in one made before that column was added."""
    db.execute(SQLITE_TABLE)
    if "models_json" not in {row[1] for row in db.execute("PRAGMA table_info(poll_state)")}:
        db.execute("ALTER TABLE poll_state ADD COLUMN models_json TEXT")


def _row(first_poll_at: str, mode: str, baseline: int, models_json: str | None) -> dict[str, Any]:
    return {"first_poll_at": first_poll_at, "mode": mode, "baseline": baseline,
            "models": None if models_json is None else json.loads(models_json)}


def covered(models: list[str] | None) -> list[str] | str:
    """What a poller covers, as the poll state keeps it: its sorted names, or ``"all"`` (``None``)."""
    return "all" if models is None else sorted(set(models))


def _stored(models: list[str] | str | None) -> str | None:
    return None if models is None else json.dumps(models)

def _ignored_row(event: ModelVersionEvent, why: str, now: str) -> dict[str, Any]:
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
        """The row (``models``: the list of names, ``"all"``, or None when not known), or None."""
        db = self.inbox._db()
        try:
            row = db.execute("SELECT first_poll_at, mode, baseline, models_json FROM poll_state"
                             " WHERE source=? AND registry=?", (source, registry)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            if "no such column" not in str(exc):
                raise
            # a table made before models_json: read as it is (a read never alters it)
            row = db.execute("SELECT first_poll_at, mode, baseline, NULL FROM poll_state WHERE source=? AND registry=?",
                             (source, registry)).fetchone()
        return None if row is None else _row(*row)

    def mark(self, source: str, registry: str, at: str, mode: str, baseline: int,
             models: list[str] | str | None) -> None:
        """The first successful poll of ``registry`` (kept if one is there already); ``models``:
        what it covers (``covered()``), None for not known."""
        def _job(db: sqlite3.Connection) -> None:
            _sqlite_table(db)
            db.execute("INSERT OR IGNORE INTO poll_state(source, registry, first_poll_at, mode, baseline, models_json)"
                       " VALUES (?,?,?,?,?,?)", (source, registry, at, mode, baseline, _stored(models)))

        self.inbox._write(_job)

    def set_models(self, source: str, registry: str, models: list[str] | str) -> None:
        def _job(db: sqlite3.Connection) -> None:
            _sqlite_table(db)
            db.execute("UPDATE poll_state SET models_json=? WHERE source=? AND registry=?",
                       (_stored(models), source, registry))

        self.inbox._write(_job)

    def models_held(self, event_source: str) -> list[str]:
        """The models the inbox holds events of from ``event_source`` (sorted)."""
        return sorted(row[0] for row in self.inbox._db().execute("SELECT DISTINCT model FROM events WHERE source=?",
                                                                 (event_source,)))

    def rename(self, source: str, old: str, new: str) -> None:
        """Keep the row of ``old`` under ``new`` (a registry's key changed); nothing if ``new`` has one."""
        def _job(db: sqlite3.Connection) -> None:
            _sqlite_table(db)
            db.execute("UPDATE OR IGNORE poll_state SET registry=? WHERE source=? AND registry=?", (new, source, old))

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
            row = conn.execute(select(t.c.first_poll_at, t.c.mode, t.c.baseline, t.c.models_json)
                               .where(t.c.source == source, t.c.registry == registry)).first()
        return None if row is None else _row(*row)

    def mark(self, source: str, registry: str, at: str, mode: str, baseline: int,
             models: list[str] | str | None) -> None:
        from sqlalchemy.dialects.postgresql import insert

        from ..store.schema import inbox_poll_state as t

        with self.engine.begin() as conn:
            conn.execute(insert(t).values(source=source, registry=registry, first_poll_at=at, mode=mode,
                                          baseline=baseline, models_json=_stored(models)).on_conflict_do_nothing())

    def set_models(self, source: str, registry: str, models: list[str] | str) -> None:
        from sqlalchemy import update

        from ..store.schema import inbox_poll_state as t

        with self.engine.begin() as conn:
            conn.execute(update(t).where(t.c.source == source, t.c.registry == registry).values(models_json=_stored(models)))

    def models_held(self, event_source: str) -> list[str]:
        from sqlalchemy import select

        from ..store.schema import inbox_events as t

        with self.engine.connect() as conn:
            return sorted(conn.execute(select(t.c.model).where(t.c.source == event_source).distinct()).scalars())

    def rename(self, source: str, old: str, new: str) -> None:
        from sqlalchemy import select, update

        from ..store.schema import inbox_poll_state as t

        taken = select(t.c.registry).where(t.c.source == source, t.c.registry == new).exists()
        with self.engine.begin() as conn:
            conn.execute(update(t).where(t.c.source == source, t.c.registry == old, ~taken).values(registry=new))

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
