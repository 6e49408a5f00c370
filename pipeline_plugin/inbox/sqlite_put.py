"""Storing deliveries in the SQLite inbox: one :class:`PutJob` per delivery, run by the group
committer (``sqlite_writer``).

A job alone is a few statements in its own savepoint. The deliveries queued during one commit are
usually many jobs of plain events (no state slot: their ids follow from their keys), and those are
stored together by :meth:`PutJob.bulk`: one look-up and one multi-row insert per table for the
whole batch. That matters more than the statements themselves: each statement lets go of the GIL
and must take it back from the busy event loop, so a batch of few statements is stored without
waiting on the loop dozens of times. The results are the same as job by job (each delivery's ids,
``duplicate``, the same history rows in the same order).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from ..events import ModelVersionEvent

#: rows per multi-row statement (each row has at most 10 values; SQLite allows 32,766 per statement)
BULK_ROWS = 500


class PutResult(list):
    """The stored ids of one delivery (a list), plus whether it was all seen before."""

    def __init__(self, ids: Iterable[str], duplicate: bool) -> None:
        super().__init__(ids)
        self.duplicate = duplicate


def event_id_for_key(key: str) -> str:
    return "ev_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def history_row(event_id: str, at: str, what: str, **data: Any) -> tuple[str, str, str, str]:
    return (event_id, at, what, json.dumps(data, sort_keys=True, default=str))


def insert_history(db: sqlite3.Connection, rows: list[tuple[str, str, str, str]]) -> None:
    for start in range(0, len(rows), BULK_ROWS):
        chunk = rows[start:start + BULK_ROWS]
        db.execute("INSERT INTO history(event_id, at, what, data_json) VALUES "
                   + ",".join(["(?,?,?,?)"] * len(chunk)), [v for row in chunk for v in row])


def _event_values(eid: str, key: str, event: ModelVersionEvent, now: str) -> tuple[Any, ...]:
    return (eid, key, event.source, event.kind, event.model, event.version, event.registry_key(),
            event.delivery_id, event.to_json(), now)


_INSERT_EVENT = ("INSERT OR IGNORE INTO events(id, dedupe_key, source, kind, model, version, registry_key,"
                 " delivery_id, event_json, received_at) VALUES ")
_INSERT_DELIVERY = "INSERT OR IGNORE INTO deliveries(source, delivery_id, received_at, event_id, meta_json) VALUES "


class PutJob:
    """One delivery to store: ``job(db)`` stores it alone; ``PutJob.bulk(db, jobs)`` stores many."""

    __slots__ = ("events", "meta", "meta_json", "now", "source")

    def __init__(self, source: str, events: list[ModelVersionEvent], meta: Mapping[str, Any], now: str) -> None:
        self.source = source
        self.events = events
        self.meta = dict(meta)
        self.meta_json = json.dumps(self.meta, default=str)
        self.now = now

    # ---- one delivery -------------------------------------------------------------------------
    def __call__(self, db: sqlite3.Connection) -> PutResult:
        ids: list[str] = []
        history: list[tuple[str, str, str, str]] = []
        new = 0
        fresh: set[str] = set()  # delivery ids first seen in this very delivery
        for event in self.events:
            if event.delivery_id not in fresh:
                row = db.execute("SELECT event_id FROM deliveries WHERE source=? AND delivery_id=?",
                                 (self.source, event.delivery_id)).fetchone()
                if row is not None:  # the sender's retry of a delivery stored before
                    ids.append(row[0])
                    history.append(history_row(row[0], self.now, "duplicate delivery", delivery_id=event.delivery_id))
                    continue
            key = event.dedupe_key()
            row = db.execute("SELECT id FROM events WHERE dedupe_key=?", (key,)).fetchone()
            existing = row[0] if row is not None else None
            if existing is not None and event.state_slot() is not None:
                key, existing = state_change(db, event, key)
            if existing is not None:
                eid = existing
                history.append(history_row(eid, self.now, "duplicate event", delivery_id=event.delivery_id))
            else:
                eid = event_id_for_key(key)
                db.execute(_INSERT_EVENT + "(?,?,?,?,?,?,?,?,?,?)", _event_values(eid, key, event, self.now))
                history.append(history_row(eid, self.now, "received", delivery_id=event.delivery_id, **self.meta))
                new += 1
            db.execute(_INSERT_DELIVERY + "(?,?,?,?,?)",
                       (self.source, event.delivery_id, self.now, eid, self.meta_json))
            fresh.add(event.delivery_id)
            ids.append(eid)
        insert_history(db, history)
        return PutResult(ids, duplicate=bool(self.events) and new == 0)

    # ---- many deliveries ----------------------------------------------------------------------
    @staticmethod
    def bulk(db: sqlite3.Connection, jobs: list[PutJob]) -> list[PutResult] | None:
        """Store ``jobs`` (in order) with a few multi-row statements, or return None (nothing
        written) when one of them needs the job-by-job path: an event with a state slot, or a
        delivery id that comes twice in the batch."""
        items: list[tuple[int, PutJob, ModelVersionEvent, str, str]] = []
        seen: set[tuple[str, str]] = set()
        for n, job in enumerate(jobs):
            for event in job.events:
                if event.state_slot() is not None or (job.source, event.delivery_id) in seen:
                    return None
                seen.add((job.source, event.delivery_id))
                key = event.dedupe_key()
                items.append((n, job, event, key, event_id_for_key(key)))
        delivered: dict[tuple[str, str], str] = {}
        for source in {job.source for job in jobs}:  # one look-up per source (the primary key's order)
            delivered.update(((source, r[0]), r[1]) for r in _existing(
                db, "SELECT delivery_id, event_id FROM deliveries WHERE source=? AND delivery_id IN ({})", "?",
                [(event.delivery_id,) for _, job, event, _, _ in items if job.source == source], (source,)))
        known_events = {r[0] for r in _existing(db, "SELECT id FROM events WHERE id IN ({})", "?",
                                                [(eid,) for *_, eid in items])}
        ids: list[list[str]] = [[] for _ in jobs]
        new = [0] * len(jobs)
        history: list[tuple[str, str, str, str]] = []
        event_rows: list[tuple[Any, ...]] = []
        delivery_rows: list[tuple[Any, ...]] = []
        for n, job, event, key, eid in items:
            before = delivered.get((job.source, event.delivery_id))
            if before is not None:
                ids[n].append(before)
                history.append(history_row(before, job.now, "duplicate delivery", delivery_id=event.delivery_id))
                continue
            if eid in known_events:
                history.append(history_row(eid, job.now, "duplicate event", delivery_id=event.delivery_id))
            else:
                known_events.add(eid)  # a later delivery of this batch with the same change is a duplicate
                event_rows.append(_event_values(eid, key, event, job.now))
                history.append(history_row(eid, job.now, "received", delivery_id=event.delivery_id, **job.meta))
                new[n] += 1
            delivery_rows.append((job.source, event.delivery_id, job.now, eid, job.meta_json))
            ids[n].append(eid)
        _insert_many(db, _INSERT_EVENT, "(?,?,?,?,?,?,?,?,?,?)", event_rows)
        _insert_many(db, _INSERT_DELIVERY, "(?,?,?,?,?)", delivery_rows)
        insert_history(db, history)
        return [PutResult(ids[n], duplicate=bool(job.events) and new[n] == 0) for n, job in enumerate(jobs)]


def _existing(db: sqlite3.Connection, sql: str, placeholder: str, keys: list[tuple[Any, ...]],
              first: tuple[Any, ...] = ()) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(keys), BULK_ROWS):
        chunk = keys[start:start + BULK_ROWS]
        out += db.execute(sql.format(",".join([placeholder] * len(chunk))),
                          [*first, *(v for k in chunk for v in k)]).fetchall()
    return out


def _insert_many(db: sqlite3.Connection, head: str, placeholder: str, rows: list[tuple[Any, ...]]) -> None:
    for start in range(0, len(rows), BULK_ROWS):
        chunk = rows[start:start + BULK_ROWS]
        db.execute(head + ",".join([placeholder] * len(chunk)), [v for row in chunk for v in row])


def state_change(db: sqlite3.Connection, event: ModelVersionEvent, key: str) -> tuple[str, str | None]:
    """For a state-setting event whose ``key`` is stored already: ``(key, id)`` of the stored
    change when it is still the latest of the event's state slot (a repeat: a duplicate); else
    ``(key#N, None)``, a fresh key (the state was set elsewhere since and is now set back: a new
    change)."""
    slot = event.state_slot()
    rows = db.execute(
        "SELECT id, dedupe_key, event_json FROM events WHERE source=? AND registry_key=? AND model=? AND kind=?"
        " ORDER BY seq DESC LIMIT 500",
        (event.source, event.registry_key(), event.model, event.kind),
    ).fetchall()
    same = re.compile(re.escape(key) + r"(#[0-9]+)?")
    for r in rows:
        if ModelVersionEvent.from_dict(json.loads(r[2])).state_slot() == slot:
            if same.fullmatch(r[1]):
                return r[1], r[0]
            break
    n = db.execute("SELECT COUNT(*) FROM events WHERE dedupe_key=? OR substr(dedupe_key, 1, ?)=?",
                   (key, len(key) + 1, key + "#")).fetchone()[0]
    return f"{key}#{n}", None
