"""The SQLite inbox of one state dir: every accepted delivery, durably stored and de-duplicated,
with what became of it. (``postgres`` is the same for several listeners on one PostgreSQL.)

``Inbox(state_dir)`` keeps one SQLite database, ``<state_dir>/inbox.sqlite3``, in WAL mode with
``synchronous=FULL``: :meth:`Inbox.put` returns only after the transaction is on disk, so the
listener answers 2xx only for deliveries that survive a crash or power loss.

Tables:

- ``events``: one row per distinct change (``dedupe_key`` is unique). ``status`` is ``pending``
  until the worker looked at it, then ``matched``, ``unmatched`` or ``ignored``; ``failed`` when it
  was dead-lettered. ``done`` says whether work is left; ``lease_owner``/``lease_until`` mark the
  worker holding it (a lease of a dead process on this host is taken over at once; any other lease
  when it expires).
- ``deliveries``: ``(source, delivery_id)`` -> the event it produced (each event of a source has
  its own delivery id, stable across the sender's retries; the same delivery again is answered
  with the same id and stores nothing).
- ``runs``: one per (event, rule, generation), ``run_id`` unique and derived from them; a replay
  bumps the event's generation and so gets new runs.
- ``history``: what happened to an event, in order (received, duplicate, matched, dispatch results).
- ``leases`` (named leases: one poller per source) and ``poll_state`` (the pollers' baselines) are
  created when first written, by ``leases.py`` and ``poll_state.py``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

from ..errors import NotFoundError, ServiceError
from ..events import ModelVersionEvent
from .leases import SqliteLeases
from .records import (
    _LIVE_OWNERS,
    EVENT_STATUSES,
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    Claimed,
    Decision,
    RunRecord,
    StoredEvent,
    _owner_dead,
    _owner_name,
    _safe_meta,
    _version_number,
    model_prefixes,
    run_id_for,
    utcnow,
)
from .sqlite_put import PutJob, PutResult, history_row, insert_history
from .sqlite_writer import committer, open_db

log = logging.getLogger("pipeline_plugin.inbox")

DB_NAME = "inbox.sqlite3"
#: PRAGMA user_version of the tables below; a newer file is refused rather than misread
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    dedupe_key TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    registry_key TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    event_json TEXT NOT NULL,
    received_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT NOT NULL DEFAULT '',
    rules_json TEXT NOT NULL DEFAULT '[]',
    done INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    last_error TEXT,
    processed_at TEXT
);
CREATE INDEX IF NOT EXISTS events_todo ON events(done, next_attempt_at);
CREATE INDEX IF NOT EXISTS events_model ON events(source, registry_key, model);
CREATE TABLE IF NOT EXISTS deliveries (
    source TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    event_id TEXT NOT NULL,
    meta_json TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (source, delivery_id)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events(id),
    rule_name TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    provider TEXT NOT NULL,
    pipeline_json TEXT NOT NULL DEFAULT '{}',
    rules_dir TEXT,
    status TEXT NOT NULL DEFAULT 'recorded',
    url TEXT,
    external_id TEXT,
    detail TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (event_id, rule_name, generation)
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    at TEXT NOT NULL,
    what TEXT NOT NULL,
    data_json TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS history_event ON history(event_id, seq);
"""
#: the events with work left, in order, with what a claim reads of them: a claim reads this small
#: index instead of sorting the open events and reading each one's row (with a backlog of thousands
#: that made every claim of 64 read them all). An index added to schema 1: an inbox written without
#: it gets it when opened, and earlier releases keep reading and writing the file
OPEN_INDEX = ("CREATE INDEX IF NOT EXISTS events_open ON events(seq, id, lease_owner, lease_until, next_attempt_at,"
              " done, source, registry_key, model) WHERE done=0")


#: an outcome, and the event finished when ``lease_owner`` is the given owner (every SET expression
#: reads the row as it was before the statement)
_FINISH = ("UPDATE events SET status=?1, reason=?2, rules_json=?3, processed_at=?4,"
           " done=CASE WHEN lease_owner=?5 THEN 1 ELSE done END,"
           " last_error=CASE WHEN lease_owner=?5 THEN NULL ELSE last_error END,"
           " lease_until=CASE WHEN lease_owner=?5 THEN NULL ELSE lease_until END,"
           " lease_owner=CASE WHEN lease_owner=?5 THEN NULL ELSE lease_owner END WHERE id=?6")
_INSERT_RUN = ("INSERT OR IGNORE INTO runs(run_id, event_id, rule_name, generation, provider, pipeline_json,"
               " rules_dir, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)")


T = TypeVar("T")


def _model(row: sqlite3.Row) -> tuple[str, str, str]:
    """The model an event row belongs to: its events are handed out in order."""
    return (row["source"], row["registry_key"], row["model"])


class Inbox(SqliteLeases):
    """The durable event store of one state dir. Thread-safe: one connection per thread."""

    def __init__(self, state_dir: str | Path, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.state_dir = Path(state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceError(f"cannot create state dir {str(self.state_dir)!r}: {exc}") from None
        self.path = self.state_dir / DB_NAME
        self.max_attempts = max_attempts
        self._local = threading.local()
        self._committer = committer(self.path)
        try:
            with self._committer.cond:  # not while another thread of this process writes
                db = self._db()
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise ServiceError(
                        f"the inbox {str(self.path)!r} was written by a newer pipeline-plugin (schema {version}, "
                        f"this one knows {SCHEMA_VERSION}); upgrade pipeline-plugin or use another --state-dir"
                    )
                if version < SCHEMA_VERSION:  # opening an existing inbox writes nothing: reading works on a full disk
                    db.executescript(SCHEMA)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                self._open_index = self._ensure_open_index(db)
        except sqlite3.Error as exc:
            raise ServiceError(f"cannot create the inbox {str(self.path)!r}: {exc}") from None

    def _ensure_open_index(self, db: sqlite3.Connection) -> bool:
        """Whether the inbox has ``events_open`` (made now if not; a full disk or a read-only file
        leaves claims reading the events table instead)."""
        if db.execute("SELECT 1 FROM sqlite_master WHERE type='index' AND name='events_open'").fetchone():
            return True
        try:
            db.execute(OPEN_INDEX)
        except sqlite3.OperationalError as exc:
            log.warning("inbox %s: could not add the index of open events (%s); claims read the events table", self.path,
                        exc)
            return False
        return True

    # ---- connection ---------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = open_db(self.path)
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def _write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job(db)`` in a write transaction and return its result once committed (fsync'd).

        Group commit: writers of this process that arrive while a commit is under way are run
        together in the next transaction, each in its own savepoint (one job's error rolls back
        only that job). One fsync then covers many deliveries; SQLite's own busy handler, which
        sleeps in growing steps, is not what orders them."""
        return self._committer.run(job)

    @staticmethod
    def _history(db: sqlite3.Connection, event_id: str, what: str, **data: Any) -> None:
        db.execute(
            "INSERT INTO history(event_id, at, what, data_json) VALUES (?,?,?,?)",
            (event_id, utcnow(), what, json.dumps(data, sort_keys=True, default=str)),
        )

    # ---- ingest -------------------------------------------------------------------------------
    def put(
        self, source: str, events: list[ModelVersionEvent], delivery_meta: Mapping[str, Any] | None = None
    ) -> PutResult:
        """Store a delivery's events durably (committed and fsync'd on return).

        An event whose ``(source, delivery_id)`` was seen before (the sender's retry), or whose
        ``dedupe_key()`` is stored already (the same change announced again) is not stored again;
        the result lists the ids either way and says ``duplicate`` when nothing new was stored."""
        return self.submit_put(source, events, delivery_meta).result()

    def submit_put(
        self, source: str, events: list[ModelVersionEvent], delivery_meta: Mapping[str, Any] | None = None
    ) -> Future[PutResult]:
        """:meth:`put` without waiting: the future resolves once the delivery's batch is committed
        (fsync'd), or fails with what would have been raised. The listener awaits it on its event
        loop (``asyncio.wrap_future``), so concurrent deliveries share one commit and hold no thread."""
        return self._committer.submit(PutJob(source, events, _safe_meta(delivery_meta or {}), utcnow()))

    # ---- work queue ---------------------------------------------------------------------------
    def new_owner(self) -> str:
        owner = _owner_name()
        _LIVE_OWNERS.add(owner)
        return owner

    def retire_owner(self, owner: str) -> None:
        _LIVE_OWNERS.discard(owner)

    def claim(self, owner: str, limit: int = 1, lease: float = LEASE_SECONDS) -> list[Claimed]:
        """Lease up to ``limit`` events that have work left, oldest first. An event leased by a
        process that died (same host) is taken over at once, any other lease when it expires.

        Events of one model (source, registry, model) are handed out in order: while another live
        worker holds one, or one waits for its retry, the later ones wait, so v3 never overtakes v2
        and two versions of a model never deploy at once; different models go to different workers
        in parallel, however many of a busy model's events come before theirs."""
        now = time.time()
        dead: dict[str, bool] = {}  # holder -> gone (asked once per claim)

        def claimable(row: sqlite3.Row) -> bool:
            return not row["done"] and row["next_attempt_at"] <= now and self._claimable(
                row["lease_owner"], row["lease_until"], owner, now, dead)

        # read on this thread's connection, as far as needed: past any number of a busy model's events
        rows = self._db().execute("SELECT id, lease_owner, lease_until, next_attempt_at, done, source, registry_key,"
                                  " model FROM events" + (" INDEXED BY events_open" if self._open_index else "") +
                                  " WHERE done=0 ORDER BY seq")
        try:
            first = model_prefixes(((_model(row), row) for row in rows), claimable, limit)
            chosen = [(row["id"], _model(row)) for row in first]
        finally:
            rows.close()
        if not chosen:
            return []  # nothing for this worker: no write transaction (deliveries need the lock)

        def _job(db: sqlite3.Connection) -> Any:
            # the chosen ones again, under the write lock: another worker may have taken or finished
            # some meanwhile; each model keeps its events up to the first one that changed
            marks = ",".join("?" * len(chosen))
            rows = {row["id"]: row for row in db.execute(
                "SELECT id, generation, attempts, lease_owner, lease_until, status, done, next_attempt_at, event_json"
                f" FROM events WHERE id IN ({marks})", [eid for eid, _ in chosen])}
            keep = model_prefixes(((model, rows.get(eid)) for eid, model in chosen), claimable)
            if not keep:
                return
            for row in keep:
                if row["lease_owner"] and row["lease_owner"] != owner:
                    self._history(db, row["id"], "lease taken over", previous_owner=row["lease_owner"])
            ids = [row["id"] for row in keep]
            db.execute(f"UPDATE events SET lease_owner=?, lease_until=?, attempts=attempts+1 WHERE id IN "
                       f"({','.join('?' * len(ids))})", (owner, now + lease, *ids))
            taken[:] = [(row["id"], row["generation"], row["attempts"], row["status"], row["event_json"])
                        for row in keep]

        taken: list[tuple[str, int, int, str, str]] = []
        self._write(_job)
        # parsed here, not in the job: while serve runs, jobs run on its event loop
        return [Claimed(id=eid, event=ModelVersionEvent.from_dict(json.loads(text)), generation=generation,
                        attempts=attempts + 1, owner=owner, status=status)
                for eid, generation, attempts, status, text in taken]

    @staticmethod
    def _claimable(holder: str | None, until: float | None, owner: str, now: float, dead: dict[str, bool]) -> bool:
        """Free, ``owner``'s own, expired, or held by a process of this host that is gone."""
        if not holder or holder == owner or (until or 0) <= now:
            return True
        gone = dead.get(holder)
        if gone is None:
            gone = dead[holder] = _owner_dead(holder)
        return gone

    def renew(self, event_id: str, owner: str, lease: float = LEASE_SECONDS) -> None:

        def _job(db: sqlite3.Connection) -> Any:
            db.execute(
                "UPDATE events SET lease_until=? WHERE id=? AND lease_owner=?", (time.time() + lease, event_id, owner)
            )
        return self._write(_job)

    def set_outcome(self, event_id: str, status: str, reason: str = "", rules: list[str] | None = None) -> None:
        """Record what matching decided (``matched``, ``unmatched``, ``ignored``)."""
        if status not in EVENT_STATUSES:
            raise ValueError(f"unknown event status {status!r}")

        def _job(db: sqlite3.Connection) -> Any:
            db.execute(
                "UPDATE events SET status=?, reason=?, rules_json=?, processed_at=? WHERE id=?",
                (status, reason, json.dumps(rules or []), utcnow(), event_id),
            )
            self._history(db, event_id, status, reason=reason, rules=rules or [])
        return self._write(_job)

    def record_runs(
        self,
        event_id: str,
        generation: int,
        runs: list[Mapping[str, Any]],
        status: str | None = None,
        reason: str = "",
        rules: list[str] | None = None,
        finish_owner: str | None = None,
    ) -> list[RunRecord]:
        """Record one run per matched rule with a pipeline (``rule_name``, ``provider``,
        ``pipeline``, ``rules_dir``), and with ``status`` the matching outcome, in one
        transaction. Idempotent: a run recorded before is kept, never doubled. With
        ``finish_owner`` and no runs, the event is also finished (released) in that transaction."""
        decision = Decision(event_id, generation, list(runs), status, reason, rules)
        self._write(self._record([decision], finish_owner, []))
        return self.runs(event_id, generation)

    def record_decisions(self, owner: str, decisions: list[Decision], release: Iterable[str] = ()) -> None:
        """What matching decided for several claimed events, in one transaction: each one's
        outcome and runs (an event without runs is finished), and the events of ``release`` handed
        back unprocessed (their lease freed, the claim not counted as an attempt)."""
        self._write(self._record(decisions, owner, list(release)))

    @staticmethod
    def _record(decisions: list[Decision], owner: str | None, release: list[str]) -> Callable[[sqlite3.Connection], None]:
        """The job that writes the decisions' outcomes, runs and history; with ``owner``, the events
        without runs are finished and those of ``release`` handed back (both only while ``owner``
        holds them). Its rows are made here, in the caller's thread: the job itself runs only SQL
        (while serve runs, it runs on the event loop, between deliveries)."""
        now = utcnow()
        # an event without runs gets its outcome and is finished in one statement (one rewrite of
        # its row, not two), finished only while ``owner`` holds it, as the ones with runs are not
        finish = {d.event_id for d in decisions if not d.runs and d.status} if owner else set()
        outcomes = [(d.status, d.reason, json.dumps(d.rules or []), now, d.event_id)
                    for d in decisions if d.status and d.event_id not in finish]
        finished = [(d.status, d.reason, json.dumps(d.rules or []), now, owner, d.event_id)
                    for d in decisions if d.event_id in finish]
        # in order: an outcome's history row, then each of its runs with the history row it gets if new
        steps: list[tuple[tuple[Any, ...] | None, tuple[str, str, str, str]]] = []
        for d in decisions:
            if d.status is not None:
                steps.append((None, history_row(d.event_id, now, d.status, reason=d.reason, rules=d.rules or [])))
            for run in d.runs:
                run_id = run_id_for(d.event_id, run["rule_name"], d.generation)
                row = (run_id, d.event_id, run["rule_name"], d.generation, run["provider"],
                       json.dumps(run.get("pipeline") or {}, sort_keys=True, default=str),
                       str(run["rules_dir"]) if run.get("rules_dir") else None, now, now)
                steps.append((row, history_row(d.event_id, now, "run recorded", run_id=run_id, rule=run["rule_name"],
                                               provider=run["provider"])))
        leases = [] if not owner else [
            (ids[start:start + 500], sql)
            for ids, sql in (
                ([d.event_id for d in decisions if not d.runs and d.event_id not in finish],
                 "UPDATE events SET done=1, lease_owner=NULL, lease_until=NULL, last_error=NULL"),
                (release, "UPDATE events SET lease_owner=NULL, lease_until=NULL, attempts=MAX(attempts-1, 0)"),
            )
            for start in range(0, len(ids), 500)
        ]

        def job(db: sqlite3.Connection) -> None:
            db.executemany("UPDATE events SET status=?, reason=?, rules_json=?, processed_at=? WHERE id=?", outcomes)
            db.executemany(_FINISH, finished)
            history = [entry for run, entry in steps if run is None or db.execute(_INSERT_RUN, run).rowcount]
            insert_history(db, history)
            for chunk, sql in leases:
                db.execute(f"{sql} WHERE lease_owner=? AND id IN ({','.join('?' * len(chunk))})", (owner, *chunk))

        return job

    def mark_dispatching(self, run_id: str, expect: tuple[str, ...] = ("recorded", "error", "dispatching")) -> bool:
        """Take the run for dispatch (committed before the provider is called). False when the run
        is no longer in one of the ``expect`` statuses (another worker took it)."""

        def _job(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE runs SET status='dispatching', attempts=attempts+1, updated_at=? WHERE run_id=? AND status IN"
                f" ({','.join('?' * len(expect))})",
                (utcnow(), run_id, *expect),
            )
            return cur.rowcount == 1

        return self._write(_job)

    def record_dispatch(
        self, run_id: str, status: str, url: str | None = None, external_id: str | None = None, detail: str = ""
    ) -> None:
        """Record a dispatch result (status, url, detail) on the run and in the event's history."""
        if not status:
            raise ValueError("a dispatch result needs a status")

        def _job(db: sqlite3.Connection) -> Any:
            row = db.execute("SELECT event_id, rule_name FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no run {run_id!r} in {self.path}")
            db.execute(
                "UPDATE runs SET status=?, url=?, external_id=?, detail=?, updated_at=? WHERE run_id=?",
                (status, url, external_id, detail, utcnow(), run_id),
            )
            self._history(
                db, row["event_id"], "dispatch " + status, run_id=run_id, rule=row["rule_name"], url=url, detail=detail
            )
        return self._write(_job)

    @staticmethod
    def _finish(db: sqlite3.Connection, event_id: str, owner: str) -> None:
        db.execute(
            "UPDATE events SET done=1, lease_owner=NULL, lease_until=NULL, last_error=NULL WHERE id=? AND lease_owner=?",
            (event_id, owner),
        )

    def finish(self, event_id: str, owner: str) -> None:
        """The event has no work left: release it."""
        self._write(lambda db: self._finish(db, event_id, owner))

    def fail(self, event_id: str, owner: str, error: str, backoff: float = 2.0) -> bool:
        """Processing failed: retry later with backoff, or dead-letter after ``max_attempts``
        (status ``failed`` unless matching had already decided). Returns True if dead-lettered."""

        def _job(db: sqlite3.Connection) -> Any:
            row = db.execute("SELECT attempts, status FROM events WHERE id=?", (event_id,)).fetchone()
            if row is None:
                return False
            dead = row["attempts"] >= self.max_attempts
            if dead:
                status = "failed" if row["status"] == "pending" else row["status"]
                db.execute(
                    "UPDATE events SET done=1, status=?, last_error=?, lease_owner=NULL, lease_until=NULL,"
                    " processed_at=? WHERE id=? AND lease_owner=?",
                    (status, error, utcnow(), event_id, owner),
                )
                db.execute(
                    "UPDATE runs SET status='failed', detail=?, updated_at=? WHERE event_id=? AND status IN"
                    " ('recorded', 'error')",
                    (f"gave up after {row['attempts']} attempts: {error}", utcnow(), event_id),
                )
                self._history(db, event_id, "dead-lettered", attempts=row["attempts"], error=error)
            else:
                delay = backoff * (2 ** (row["attempts"] - 1))
                db.execute(
                    "UPDATE events SET last_error=?, lease_owner=NULL, lease_until=NULL, next_attempt_at=?"
                    " WHERE id=? AND lease_owner=?",
                    (error, time.time() + delay, event_id, owner),
                )
                self._history(db, event_id, "attempt failed", attempt=row["attempts"], error=error, retry_in=delay)
            return dead
        return self._write(_job)

    def requeue(self, event_id: str, owner: str) -> Claimed:
        """For ``events replay``: a new generation (new run ids), status pending, leased to ``owner``."""
        eid = self.resolve(event_id)

        def _job(db: sqlite3.Connection) -> Any:
            row = db.execute("SELECT * FROM events WHERE id=?", (eid,)).fetchone()
            holder = row["lease_owner"]
            if holder and holder != owner and (row["lease_until"] or 0) > time.time() and not _owner_dead(holder):
                raise ServiceError(f"event {eid} is being processed by {holder}; retry `events replay` when it is done")
            generation = row["generation"] + 1
            db.execute(
                "UPDATE events SET status='pending', reason='', rules_json='[]', done=0, generation=?, attempts=1,"
                " next_attempt_at=0, lease_owner=?, lease_until=?, last_error=NULL WHERE id=?",
                (generation, owner, time.time() + LEASE_SECONDS, eid),
            )
            self._history(db, eid, "replay", generation=generation)
            return row, generation

        row, generation = self._write(_job)
        return Claimed(
            id=eid,
            event=ModelVersionEvent.from_dict(json.loads(row["event_json"])),
            generation=generation,
            attempts=1,
            owner=owner,
        )

    # ---- reading ------------------------------------------------------------------------------
    def resolve(self, event_id: str) -> str:
        """Full id from an id or a unique prefix of one."""
        db = self._db()
        row = db.execute("SELECT id FROM events WHERE id=?", (event_id,)).fetchone()
        if row is not None:
            return row["id"]
        if event_id:
            rows = db.execute(
                "SELECT id FROM events WHERE id LIKE ? ESCAPE '\\' LIMIT 2",
                (event_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
            ).fetchall()
            if len(rows) == 1:
                return rows[0]["id"]
        raise NotFoundError(
            f"no event {event_id!r} in {self.path}; list them with `pipeline-plugin events list --state-dir {self.state_dir}`"
        )

    def _stored(self, row: sqlite3.Row) -> StoredEvent:
        return StoredEvent(
            id=row["id"],
            event=ModelVersionEvent.from_dict(json.loads(row["event_json"])),
            status=row["status"],
            reason=row["reason"],
            rules=json.loads(row["rules_json"]),
            received_at=row["received_at"],
            processed_at=row["processed_at"],
            done=bool(row["done"]),
            generation=row["generation"],
            attempts=row["attempts"],
            last_error=row["last_error"],
        )

    def get(self, event_id: str) -> StoredEvent:
        eid = self.resolve(event_id)
        db = self._db()
        stored = self._stored(db.execute("SELECT * FROM events WHERE id=?", (eid,)).fetchone())
        stored.runs = self.runs(eid)
        stored.history = [
            {"at": h["at"], "what": h["what"], **json.loads(h["data_json"])}
            for h in db.execute("SELECT * FROM history WHERE event_id=? ORDER BY seq", (eid,))
        ]
        return stored

    def list(self, status: str | None = None, limit: int | None = None) -> list[StoredEvent]:
        sql = "SELECT * FROM events"
        params: list[Any] = []
        if status:
            sql += " WHERE status=?"
            params.append(status)
        sql += " ORDER BY seq"
        if limit:
            sql = f"SELECT * FROM ({sql.replace('ORDER BY seq', 'ORDER BY seq DESC')} LIMIT ?) ORDER BY seq"
            params.append(limit)
        return [self._stored(r) for r in self._db().execute(sql, params)]

    def runs(self, event_id: str | None = None, generation: int | None = None) -> list[RunRecord]:
        sql, params = "SELECT * FROM runs", []
        clauses = []
        if event_id is not None:
            clauses.append("event_id=?")
            params.append(event_id)
        if generation is not None:
            clauses.append("generation=?")
            params.append(generation)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created_at, rule_name"
        return [
            RunRecord(
                run_id=r["run_id"],
                event_id=r["event_id"],
                rule_name=r["rule_name"],
                generation=r["generation"],
                provider=r["provider"],
                pipeline=json.loads(r["pipeline_json"]),
                rules_dir=r["rules_dir"],
                status=r["status"],
                url=r["url"],
                external_id=r["external_id"],
                detail=r["detail"],
                attempts=r["attempts"],
                created_at=r["created_at"],
                updated_at=r["updated_at"],
            )
            for r in self._db().execute(sql, params)
        ]

    def latest_version(self, source: str, registry_key: str, model: str) -> str | None:
        """The numerically highest version seen for this model of this registry (deleted versions
        excluded), for rules' ``version: latest``; None when no numeric version was seen."""
        rows = self._db().execute(
            "SELECT version, kind FROM events WHERE source=? AND registry_key=? AND model=? ORDER BY seq",
            (source, registry_key, model),
        ).fetchall()
        live: dict[str, tuple[int, ...]] = {}
        for r in rows:
            number = _version_number(r["version"])
            if number is None:
                continue
            if r["kind"] == "model_version.deleted":
                live.pop(r["version"], None)
            else:
                live[r["version"]] = number
        if not live:
            return None
        return max(live.items(), key=lambda kv: kv[1])[0]

    def depth(self) -> int:
        """Events with work left (the worker's backlog)."""
        return self._db().execute("SELECT COUNT(*) FROM events WHERE done=0").fetchone()[0]

    def counts(self) -> dict[str, dict[str, int]]:
        db = self._db()
        return {
            "events": {r[0]: r[1] for r in db.execute("SELECT status, COUNT(*) FROM events GROUP BY status")},
            "runs": {r[0]: r[1] for r in db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status")},
        }
