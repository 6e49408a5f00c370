"""The inbox on PostgreSQL: one inbox shared by any number of ``serve`` replicas on any hosts.

Same API as the SQLite :class:`pipeline_plugin.inbox.Inbox`; the tables (``inbox_*``, see
``pipeline_plugin/store/schema.py``) are created by the store's Alembic migrations. What makes
several replicas safe:

- ``put``: group commit (``pg_writer``): the deliveries queued in this process share one
  transaction, each answered after its commit; events and deliveries are inserted with ``ON
  CONFLICT DO NOTHING`` on their unique keys, so a delivery that reaches two replicas at once is
  stored once.
- ``claim``: ``SELECT ... FOR UPDATE SKIP LOCKED`` of events with work left whose lease is free,
  its own, or expired, and no earlier unfinished event of the same model (each model's events are
  handed out in order). A claim waits for the writers of its models to commit (their locks,
  ``pg_writer``): an event numbered before those it read may not be committed yet. Lease times are
  the database's clock; a replica on another host cannot be asked whether it still runs, so only
  expiry frees its claims.
- runs: unique ``(event_id, rule_name, generation)``; ``mark_dispatching`` is a compare-and-set of
  the run's status, so one replica alone starts each run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from ..errors import NotFoundError, ServiceError
from ..events import ModelVersionEvent
from .leases import check_lease_args, lease_row
from .pg_writer import RETRY_SQLSTATES as _RETRY_SQLSTATES
from .pg_writer import PutJob, committer_for, model_lock_key
from .records import (
    EVENT_STATUSES,
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    Claimed,
    Decision,
    RunRecord,
    StoredEvent,
    _owner_name,
    _safe_meta,
    _version_number,
    model_prefixes,
    run_id_for,
    utcnow,
)
from .sqlite_put import PutResult
from .sqlite_put import event_id_for_key as _event_id_for_key

T = TypeVar("T")
log = logging.getLogger("pipeline_plugin.inbox")
#: overrides LEASE_SECONDS for the shared inbox (how long a killed replica's claims stay blocked)
LEASE_ENV = "PIPELINE_PLUGIN_INBOX_LEASE_SECONDS"


def lease_seconds(default: float = LEASE_SECONDS) -> float:
    raw = os.environ.get(LEASE_ENV)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0
    if not value > 0:
        from ..errors import ConfigError

        raise ConfigError(f"${LEASE_ENV} {raw!r} is not a number of seconds above 0; e.g. {LEASE_ENV}=300")
    return value


#: the oldest ``limit`` of the unfinished events of the ``limit`` oldest models whose oldest
#: unfinished event is claimable now, each model's from its oldest on (a model's rows are a prefix
#: of its own, in order). The oldest unfinished event of each model comes from a walk that jumps
#: from model to model on the partial index inbox_events_unfinished, one probe per model with work
#: left (a DISTINCT ON sorted every unfinished event instead: 51 ms a claim for 20,000 events of 50
#: models, 1.4 ms this way; 20,000 models of one event each: 63 ms against 224 ms).
_CLAIM_CANDIDATES = (
    "WITH RECURSIVE heads AS ("
    " (SELECT seq, source, registry_key, model, lease_owner, lease_until, next_attempt_at FROM inbox_events"
    "  WHERE NOT done ORDER BY source, registry_key, model, seq LIMIT 1)"
    " UNION ALL"
    " SELECT n.* FROM heads h CROSS JOIN LATERAL (SELECT seq, source, registry_key, model, lease_owner,"
    "   lease_until, next_attempt_at FROM inbox_events"
    "   WHERE NOT done AND (source, registry_key, model) > (h.source, h.registry_key, h.model)"
    "   ORDER BY source, registry_key, model, seq LIMIT 1) n)"
    "SELECT f.seq, f.source, f.registry_key, f.model, f.lease_owner, f.lease_until, f.next_attempt_at, f.done"
    " FROM (SELECT * FROM heads WHERE heads.next_attempt_at <= :now"
    "  AND (heads.lease_owner IS NULL OR heads.lease_owner = :owner OR heads.lease_until < :now)"
    "  ORDER BY heads.seq LIMIT :limit) h"
    " CROSS JOIN LATERAL (SELECT seq, source, registry_key, model, lease_owner, lease_until, next_attempt_at, done"
    "   FROM inbox_events WHERE NOT done AND source = h.source AND registry_key = h.registry_key"
    "   AND model = h.model ORDER BY seq LIMIT :limit) f"
    " ORDER BY f.seq LIMIT :limit"
)


#: the models' locks, smallest key first (the subquery's order is the order they are taken in: two
#: claims never wait for each other in a circle), each waited for at most CLAIM_LOCK_TIMEOUT
_MODEL_LOCKS = "SELECT pg_advisory_xact_lock(o.k) FROM (SELECT k FROM unnest(CAST(:k AS bigint[])) AS k ORDER BY k) AS o"
#: how long a claim waits for the writers of its models to commit (a writer holds a model's lock
#: for one transaction: milliseconds); past it the claim fails and is tried again
CLAIM_LOCK_TIMEOUT = "5s"
LOCK_NOT_AVAILABLE = "55P03"
#: the chosen events again, locked, each with its model's oldest unfinished sequence number
_CLAIM_RECHECK = (
    "SELECT e.seq, e.id, e.event_json, e.generation, e.attempts, e.lease_owner, e.lease_until, e.status, e.done,"
    " e.next_attempt_at, e.source, e.registry_key, e.model, (SELECT min(o.seq) FROM inbox_events o WHERE NOT o.done"
    " AND o.source = e.source AND o.registry_key = e.registry_key AND o.model = e.model) AS first_seq"
    " FROM inbox_events e WHERE e.seq = ANY(:seqs) ORDER BY e.seq FOR UPDATE OF e SKIP LOCKED"
)


def _unless_passed(row: Any, firsts: dict[tuple[str, str, str], int]) -> Any:
    """``row``, unless its model now has an unfinished event before the first one the claim read
    (committed since): then None, and the model waits for the next claim."""
    if row is None or row.first_seq is None:
        return row
    return None if row.first_seq < firsts[_key(row)] else row


def _key(row: Any) -> tuple[str, str, str]:
    return (row.source, row.registry_key, row.model)


class PostgresInbox:
    """The inbox in a shared PostgreSQL database (``postgresql://`` URL). Thread-safe (a pool)."""

    backend = "postgresql"

    def __init__(self, url: str, state_dir: str | Path | None = None, max_attempts: int = MAX_ATTEMPTS) -> None:
        from ..store import engine as store_engine

        self.url = store_engine.normalize_url(url)
        self.engine = store_engine.engine_for(self.url)
        self.path = store_engine.mask(self.url)  # for messages ("no event ... in <path>")
        self.state_dir = Path(state_dir) if state_dir else None
        self.max_attempts = max_attempts
        self.lease = lease_seconds()
        self._committer = committer_for(self.url, self.engine, self.path, self._put_one)

    def close(self) -> None:
        pass  # the engine is shared by the process (store.engine caches it)

    # ---- plumbing -----------------------------------------------------------------------------
    def _write(self, job: Callable[[Any], T]) -> T:
        """Run ``job(conn)`` in one transaction; a deadlock or serialization failure between
        replicas (PostgreSQL aborts one of them) is retried a few times."""
        from sqlalchemy.exc import DBAPIError

        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    return job(conn)
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES and attempt < 4:
                    time.sleep(0.01 * (attempt + 1))
                    continue
                raise ServiceError(f"the inbox in {self.path} cannot store: {_short(exc)}") from None
        raise AssertionError("unreachable")

    def _read(self, job: Callable[[Any], T]) -> T:
        from sqlalchemy.exc import DBAPIError

        try:
            with self.engine.connect() as conn:
                return job(conn)
        except DBAPIError as exc:
            raise ServiceError(f"the inbox in {self.path} does not answer: {_short(exc)}") from None

    @staticmethod
    def _x(conn: Any, sql: str, **params: Any) -> Any:
        from sqlalchemy import text

        return conn.execute(text(sql), params)

    @staticmethod
    def _now(conn: Any) -> float:
        return float(PostgresInbox._x(conn, "SELECT EXTRACT(EPOCH FROM clock_timestamp())").scalar())

    def _history(self, conn: Any, event_id: str, what: str, **data: Any) -> None:
        self._x(
            conn,
            "INSERT INTO inbox_history(event_id, at, what, data_json) VALUES (:e, :at, :w, :d)",
            e=event_id, at=utcnow(), w=what, d=json.dumps(data, sort_keys=True, default=str),
        )

    def cannot_store(self) -> str | None:
        """Why a delivery cannot be stored now (a read-only standby or session), or None.
        Raises ServiceError when the database does not answer."""
        row = self._read(lambda c: self._x(
            c, "SELECT pg_is_in_recovery() AS standby, current_setting('transaction_read_only') AS ro").first())
        if row.standby:
            return f"the database {self.path} is a read-only standby (in recovery): point the URL at the primary"
        if row.ro == "on":
            return f"the database {self.path} is read-only for this user (default_transaction_read_only)"
        return None

    # ---- ingest -------------------------------------------------------------------------------
    def put(self, source: str, events: list[ModelVersionEvent], delivery_meta: Mapping[str, Any] | None = None) -> PutResult:
        """Store a delivery's events durably (committed on return); see :meth:`submit_put`."""
        return self.submit_put(source, events, delivery_meta).result()

    def submit_put(
        self, source: str, events: list[ModelVersionEvent], delivery_meta: Mapping[str, Any] | None = None
    ) -> Future[PutResult]:
        """:meth:`put` without waiting: the future resolves once the transaction holding the
        delivery is committed, or fails with what would have been raised. Deliveries queued while
        a commit is under way share the next transaction (``pg_writer``: set-wise statements, a
        savepoint per delivery when one of them fails); the listener awaits the future."""
        return self._committer.submit(PutJob(source, list(events), _safe_meta(delivery_meta or {}), utcnow()))

    def _put_one(self, conn: Any, source: str, events: list[ModelVersionEvent], meta: Mapping[str, Any],
                 now: str) -> PutResult:
        """One delivery, statement by statement (the writer's path for what its batch can't do)."""
        ids: list[str] = []
        new = 0
        fresh: set[str] = set()
        for event in events:
            row = None
            if event.delivery_id not in fresh:
                row = self._x(conn, "SELECT event_id FROM inbox_deliveries WHERE source=:s AND delivery_id=:d",
                              s=source, d=event.delivery_id).first()
            if row is not None:
                ids.append(row[0])
                self._history(conn, row[0], "duplicate delivery", delivery_id=event.delivery_id)
                continue
            key = event.dedupe_key()
            existing = self._x(conn, "SELECT id FROM inbox_events WHERE dedupe_key=:k", k=key).scalar()
            if existing is not None and event.state_slot() is not None:
                key, existing = self._state_change(conn, event, key)
            if existing is None:
                eid = _event_id_for_key(key)
                inserted = self._x(
                    conn,
                    "INSERT INTO inbox_events(id, dedupe_key, source, kind, model, version, registry_key, delivery_id,"
                    " event_json, received_at) VALUES (:id, :k, :src, :kind, :model, :version, :reg, :did, :ej, :at)"
                    " ON CONFLICT DO NOTHING RETURNING id",
                    id=eid, k=key, src=event.source, kind=event.kind, model=event.model, version=event.version,
                    reg=event.registry_key(), did=event.delivery_id, ej=event.to_json(), at=now,
                ).scalar()
                if inserted is None:  # another replica stored the same change a moment ago
                    existing = self._x(conn, "SELECT id FROM inbox_events WHERE dedupe_key=:k", k=key).scalar() or eid
                else:
                    self._history(conn, eid, "received", delivery_id=event.delivery_id, **meta)
                    new += 1
            if existing is not None:
                eid = existing
                self._history(conn, eid, "duplicate event", delivery_id=event.delivery_id)
            self._x(
                conn,
                "INSERT INTO inbox_deliveries(source, delivery_id, received_at, event_id, meta_json)"
                " VALUES (:s, :d, :at, :e, :m) ON CONFLICT DO NOTHING",
                s=source, d=event.delivery_id, at=now, e=eid, m=json.dumps(meta, default=str),
            )
            fresh.add(event.delivery_id)
            ids.append(eid)
        return PutResult(ids, duplicate=bool(events) and new == 0)

    def _state_change(self, conn: Any, event: ModelVersionEvent, key: str) -> tuple[str, str | None]:
        slot = event.state_slot()
        rows = self._x(
            conn,
            "SELECT id, dedupe_key, event_json FROM inbox_events WHERE source=:s AND registry_key=:r AND model=:m"
            " AND kind=:k ORDER BY seq DESC LIMIT 500",
            s=event.source, r=event.registry_key(), m=event.model, k=event.kind,
        ).all()
        same = re.compile(re.escape(key) + r"(#[0-9]+)?")
        for r in rows:
            if ModelVersionEvent.from_dict(json.loads(r.event_json)).state_slot() == slot:
                if same.fullmatch(r.dedupe_key):
                    return r.dedupe_key, r.id
                break
        n = self._x(conn, "SELECT COUNT(*) FROM inbox_events WHERE dedupe_key=:k OR dedupe_key LIKE :p",
                    k=key, p=_like_prefix(key + "#")).scalar()
        return f"{key}#{n}", None

    # ---- work queue ---------------------------------------------------------------------------
    def new_owner(self) -> str:
        return _owner_name()

    def retire_owner(self, owner: str) -> None:
        pass  # its leases expire (another host cannot tell whether this process still runs)

    def claim(self, owner: str, limit: int = 1, lease: float | None = None) -> list[Claimed]:
        """Lease up to ``limit`` events with work left, oldest first. Each model's events are
        handed out in order: the oldest unfinished event of a model is claimable when it is free,
        this owner's, or its lease expired, and not waiting for a retry; a claim takes it with the
        claimable events that follow it, so one worker holds them all (as the SQLite inbox does)
        and no replica takes a later version while an earlier one is unfinished."""
        seconds = self.lease if lease is None or lease == LEASE_SECONDS else lease

        from sqlalchemy.exc import DBAPIError

        def _job(conn: Any) -> list[Claimed]:
            now = self._now(conn)
            # the oldest unfinished events of the models whose first is claimable, each model's in order
            rows = self._x(conn, _CLAIM_CANDIDATES, now=now, owner=owner, limit=limit).all()

            def claimable(row: Any) -> bool:
                return not row.done and row.next_attempt_at <= now and (
                    row.lease_owner is None or row.lease_owner == owner or (row.lease_until or 0) < now)

            chosen = model_prefixes(((_key(row), row) for row in rows), claimable)
            if not chosen:
                return []
            # a writer (any replica's) storing events of these models holds their locks until it
            # commits (``pg_writer``): an event numbered before those read here may still come. The
            # claim waits for those commits by taking the locks; once it has them, every number taken
            # before is committed, and a writer after it gets a later one. So they are let go at
            # once (the savepoint's rollback): writers do not wait for this claim's commit
            self._x(conn, f"SET LOCAL lock_timeout = '{CLAIM_LOCK_TIMEOUT}'")
            waited = conn.begin_nested()
            try:
                self._x(conn, _MODEL_LOCKS, k=sorted({model_lock_key(*_key(row)) for row in chosen})).all()
            except DBAPIError as exc:
                waited.rollback()
                if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                    raise
                log.warning("a claim waited %s for the commit of a transaction storing events of %d model(s); "
                            "they are claimed later. A session holding advisory locks for long (see pg_locks) "
                            "keeps them waiting", CLAIM_LOCK_TIMEOUT, len({_key(row) for row in chosen}))
                return []
            waited.rollback()
            # lock them (a replica claiming at once skips them) and check again what it may have
            # changed, and that each model's first is still its oldest unfinished event (one
            # committed since the read above comes first)
            locked = {row.seq: row for row in self._x(conn, _CLAIM_RECHECK, seqs=[row.seq for row in chosen]).all()}
            firsts: dict[tuple[str, str, str], int] = {}
            for row in chosen:  # oldest first: a model's first row is the first of it
                firsts.setdefault(_key(row), row.seq)
            held = model_prefixes(((_key(row), _unless_passed(locked.get(row.seq), firsts)) for row in chosen),
                                  claimable)
            claimed = []
            for row in held:
                if row.lease_owner and row.lease_owner != owner:
                    self._history(conn, row.id, "lease taken over", previous_owner=row.lease_owner)
                claimed.append(Claimed(
                    id=row.id, event=ModelVersionEvent.from_dict(json.loads(row.event_json)),
                    generation=row.generation, attempts=row.attempts + 1, owner=owner, status=row.status,
                ))
            if held:
                self._x(conn, "UPDATE inbox_events SET lease_owner=:o, lease_until=:u, attempts=attempts+1"
                        " WHERE seq = ANY(:seqs)", o=owner, u=now + seconds, seqs=[row.seq for row in held])
            return claimed

        return self._write(_job)

    def renew(self, event_id: str, owner: str, lease: float | None = None) -> None:
        seconds = self.lease if lease is None or lease == LEASE_SECONDS else lease
        self._write(lambda c: self._x(
            c, "UPDATE inbox_events SET lease_until = EXTRACT(EPOCH FROM clock_timestamp()) + :s"
            " WHERE id=:id AND lease_owner=:o", s=seconds, id=event_id, o=owner))

    def _outcome(self, conn: Any, event_id: str, status: str, reason: str, rules: list[str] | None, now: str) -> None:
        self._x(conn, "UPDATE inbox_events SET status=:st, reason=:r, rules_json=:rj, processed_at=:at WHERE id=:id",
                st=status, r=reason, rj=json.dumps(rules or []), at=now, id=event_id)
        self._history(conn, event_id, status, reason=reason, rules=rules or [])

    def set_outcome(self, event_id: str, status: str, reason: str = "", rules: list[str] | None = None) -> None:
        if status not in EVENT_STATUSES:
            raise ValueError(f"unknown event status {status!r}")
        self._write(lambda c: self._outcome(c, event_id, status, reason, rules, utcnow()))

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
        decision = Decision(event_id, generation, list(runs), status, reason, rules)
        self._write(lambda c: self._record(c, decision, finish_owner, utcnow()))
        return self.runs(event_id, generation)

    def record_decisions(self, owner: str, decisions: list[Decision], release: Iterable[str] = ()) -> None:
        """As the SQLite inbox's: the decisions of several claimed events in one transaction, and
        the events of ``release`` handed back unprocessed."""
        now = utcnow()

        def _job(conn: Any) -> None:
            for decision in decisions:
                self._record(conn, decision, owner, now)
            for event_id in release:
                self._x(conn, "UPDATE inbox_events SET lease_owner=NULL, lease_until=NULL,"
                        " attempts=GREATEST(attempts-1, 0) WHERE id=:id AND lease_owner=:o", id=event_id, o=owner)

        self._write(_job)

    def _record(self, conn: Any, d: Decision, finish_owner: str | None, now: str) -> None:
        if d.status is not None:
            self._outcome(conn, d.event_id, d.status, d.reason, d.rules, now)
        for run in d.runs:
            run_id = run_id_for(d.event_id, run["rule_name"], d.generation)
            added = self._x(
                conn,
                "INSERT INTO inbox_runs(run_id, event_id, rule_name, generation, provider, pipeline_json, rules_dir,"
                " created_at, updated_at) VALUES (:id, :e, :rule, :g, :p, :pj, :rd, :at, :at)"
                " ON CONFLICT DO NOTHING RETURNING run_id",
                id=run_id, e=d.event_id, rule=run["rule_name"], g=d.generation, p=run["provider"],
                pj=json.dumps(run.get("pipeline") or {}, sort_keys=True, default=str),
                rd=str(run["rules_dir"]) if run.get("rules_dir") else None, at=now,
            ).scalar()
            if added:
                self._history(conn, d.event_id, "run recorded", run_id=run_id, rule=run["rule_name"], provider=run["provider"])
        if finish_owner and not d.runs:
            self._finish(conn, d.event_id, finish_owner)

    def mark_dispatching(self, run_id: str, expect: tuple[str, ...] = ("recorded", "error", "dispatching")) -> bool:
        """Compare-and-set: True for the one caller that moved the run from ``expect`` to dispatching."""
        from sqlalchemy import bindparam, text

        def _job(conn: Any) -> bool:
            stmt = text(
                "UPDATE inbox_runs SET status='dispatching', attempts=attempts+1, updated_at=:at"
                " WHERE run_id=:id AND status IN :expect"
            ).bindparams(bindparam("expect", expanding=True))
            return conn.execute(stmt, {"at": utcnow(), "id": run_id, "expect": list(expect)}).rowcount == 1

        return self._write(_job)

    def record_dispatch(self, run_id: str, status: str, url: str | None = None, external_id: str | None = None,
                        detail: str = "") -> None:
        if not status:
            raise ValueError("a dispatch result needs a status")

        def _job(conn: Any) -> None:
            row = self._x(conn, "SELECT event_id, rule_name FROM inbox_runs WHERE run_id=:id", id=run_id).first()
            if row is None:
                raise NotFoundError(f"no run {run_id!r} in {self.path}")
            self._x(conn, "UPDATE inbox_runs SET status=:st, url=:u, external_id=:x, detail=:d, updated_at=:at"
                    " WHERE run_id=:id", st=status, u=url, x=external_id, d=detail, at=utcnow(), id=run_id)
            self._history(conn, row.event_id, "dispatch " + status, run_id=run_id, rule=row.rule_name, url=url, detail=detail)

        self._write(_job)

    def _finish(self, conn: Any, event_id: str, owner: str) -> None:
        self._x(conn, "UPDATE inbox_events SET done=true, lease_owner=NULL, lease_until=NULL, last_error=NULL"
                " WHERE id=:id AND lease_owner=:o", id=event_id, o=owner)

    def finish(self, event_id: str, owner: str) -> None:
        self._write(lambda c: self._finish(c, event_id, owner))

    def fail(self, event_id: str, owner: str, error: str, backoff: float = 2.0) -> bool:
        def _job(conn: Any) -> bool:
            row = self._x(conn, "SELECT attempts, status FROM inbox_events WHERE id=:id FOR UPDATE", id=event_id).first()
            if row is None:
                return False
            dead = row.attempts >= self.max_attempts
            if dead:
                status = "failed" if row.status == "pending" else row.status
                self._x(conn, "UPDATE inbox_events SET done=true, status=:st, last_error=:err, lease_owner=NULL,"
                        " lease_until=NULL, processed_at=:at WHERE id=:id AND lease_owner=:o",
                        st=status, err=error, at=utcnow(), id=event_id, o=owner)
                self._x(conn, "UPDATE inbox_runs SET status='failed', detail=:d, updated_at=:at WHERE event_id=:id"
                        " AND status IN ('recorded', 'error')",
                        d=f"gave up after {row.attempts} attempts: {error}", at=utcnow(), id=event_id)
                self._history(conn, event_id, "dead-lettered", attempts=row.attempts, error=error)
            else:
                delay = backoff * (2 ** (row.attempts - 1))
                self._x(conn, "UPDATE inbox_events SET last_error=:err, lease_owner=NULL, lease_until=NULL,"
                        " next_attempt_at=EXTRACT(EPOCH FROM clock_timestamp()) + :d WHERE id=:id AND lease_owner=:o",
                        err=error, d=delay, id=event_id, o=owner)
                self._history(conn, event_id, "attempt failed", attempt=row.attempts, error=error, retry_in=delay)
            return dead

        return self._write(_job)

    def requeue(self, event_id: str, owner: str) -> Claimed:
        eid = self.resolve(event_id)

        def _job(conn: Any) -> tuple[Any, int]:
            now = self._now(conn)
            row = self._x(conn, "SELECT * FROM inbox_events WHERE id=:id FOR UPDATE", id=eid).first()
            if row.lease_owner and row.lease_owner != owner and (row.lease_until or 0) > now:
                raise ServiceError(f"event {eid} is being processed by {row.lease_owner}; retry `events replay` when it is done")
            generation = row.generation + 1
            self._x(conn, "UPDATE inbox_events SET status='pending', reason='', rules_json='[]', done=false,"
                    " generation=:g, attempts=1, next_attempt_at=0, lease_owner=:o, lease_until=:u, last_error=NULL"
                    " WHERE id=:id", g=generation, o=owner, u=now + self.lease, id=eid)
            self._history(conn, eid, "replay", generation=generation)
            return row, generation

        row, generation = self._write(_job)
        return Claimed(id=eid, event=ModelVersionEvent.from_dict(json.loads(row.event_json)), generation=generation,
                       attempts=1, owner=owner)

    # ---- leases (see pipeline_plugin.inbox.leases) ---------------------------------------------
    def try_lease(self, name: str, owner: str, seconds: float, status: dict | None = None) -> bool:
        check_lease_args(name, owner, seconds)
        status_json = json.dumps(status or {}, sort_keys=True, default=str)

        def _job(conn: Any) -> bool:
            now = self._now(conn)
            got = self._x(
                conn,
                "INSERT INTO inbox_leases(name, owner, until, status_json, updated_at) VALUES (:n, :o, :u, :s, :now)"
                " ON CONFLICT (name) DO UPDATE SET owner=excluded.owner, until=excluded.until,"
                " status_json=excluded.status_json, updated_at=excluded.updated_at"
                " WHERE inbox_leases.owner=excluded.owner OR inbox_leases.until < :now RETURNING name",
                n=name, o=owner, u=now + seconds, s=status_json, now=now,
            ).first()
            return got is not None

        return self._write(_job)

    def release_lease(self, name: str, owner: str) -> None:
        check_lease_args(name, owner)
        self._write(lambda c: self._x(c, "DELETE FROM inbox_leases WHERE name=:n AND owner=:o", n=name, o=owner))

    def leases(self) -> list[dict[str, Any]]:
        return self._read(lambda c: [
            lease_row(r.name, r.owner, r.until, r.status_json)
            for r in self._x(c, "SELECT name, owner, until, status_json FROM inbox_leases"
                             " WHERE until >= EXTRACT(EPOCH FROM clock_timestamp()) ORDER BY name")
        ])

    # ---- reading ------------------------------------------------------------------------------
    def resolve(self, event_id: str) -> str:
        def _job(conn: Any) -> str | None:
            found = self._x(conn, "SELECT id FROM inbox_events WHERE id=:id", id=event_id).scalar()
            if found is None and event_id:
                rows = self._x(conn, "SELECT id FROM inbox_events WHERE id LIKE :p LIMIT 2", p=_like_prefix(event_id)).all()
                if len(rows) == 1:
                    found = rows[0].id
            return found

        found = self._read(_job)
        if found is None:
            raise NotFoundError(
                f"no event {event_id!r} in {self.path}; list them with `pipeline-plugin events list --database-url URL`"
            )
        return found

    @staticmethod
    def _stored(row: Any) -> StoredEvent:
        return StoredEvent(
            id=row.id, event=ModelVersionEvent.from_dict(json.loads(row.event_json)), status=row.status,
            reason=row.reason, rules=json.loads(row.rules_json), received_at=row.received_at,
            processed_at=row.processed_at, done=bool(row.done), generation=row.generation, attempts=row.attempts,
            last_error=row.last_error,
        )

    def get(self, event_id: str) -> StoredEvent:
        eid = self.resolve(event_id)

        def _job(conn: Any) -> StoredEvent:
            stored = self._stored(self._x(conn, "SELECT * FROM inbox_events WHERE id=:id", id=eid).first())
            stored.history = [
                {"at": h.at, "what": h.what, **json.loads(h.data_json)}
                for h in self._x(conn, "SELECT * FROM inbox_history WHERE event_id=:id ORDER BY seq", id=eid)
            ]
            return stored

        stored = self._read(_job)
        stored.runs = self.runs(eid)
        return stored

    def list(self, status: str | None = None, limit: int | None = None) -> list[StoredEvent]:
        where = " WHERE status=:st" if status else ""
        if limit:
            sql = f"SELECT * FROM (SELECT * FROM inbox_events{where} ORDER BY seq DESC LIMIT :lim) t ORDER BY seq"
        else:
            sql = f"SELECT * FROM inbox_events{where} ORDER BY seq"
        return self._read(lambda c: [self._stored(r) for r in self._x(c, sql, st=status, lim=limit)])

    def runs(self, event_id: str | None = None, generation: int | None = None) -> list[RunRecord]:
        clauses = []
        if event_id is not None:
            clauses.append("event_id=:e")
        if generation is not None:
            clauses.append("generation=:g")
        sql = "SELECT * FROM inbox_runs" + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY created_at, rule_name"
        return self._read(lambda c: [
            RunRecord(
                run_id=r.run_id, event_id=r.event_id, rule_name=r.rule_name, generation=r.generation, provider=r.provider,
                pipeline=json.loads(r.pipeline_json), rules_dir=r.rules_dir, status=r.status, url=r.url,
                external_id=r.external_id, detail=r.detail, attempts=r.attempts, created_at=r.created_at,
                updated_at=r.updated_at,
            )
            for r in self._x(c, sql, e=event_id, g=generation)
        ])

    def latest_version(self, source: str, registry_key: str, model: str) -> str | None:
        rows = self._read(lambda c: self._x(
            c, "SELECT version, kind FROM inbox_events WHERE source=:s AND registry_key=:r AND model=:m ORDER BY seq",
            s=source, r=registry_key, m=model).all())
        live: dict[str, tuple[int, ...]] = {}
        for r in rows:
            number = _version_number(r.version)
            if number is None:
                continue
            if r.kind == "model_version.deleted":
                live.pop(r.version, None)
            else:
                live[r.version] = number
        return max(live.items(), key=lambda kv: kv[1])[0] if live else None

    def depth(self) -> int:
        return int(self._read(lambda c: self._x(c, "SELECT COUNT(*) FROM inbox_events WHERE done = false").scalar()))

    def counts(self) -> dict[str, dict[str, int]]:
        def _job(conn: Any) -> dict[str, dict[str, int]]:
            return {
                "events": {r[0]: r[1] for r in self._x(conn, "SELECT status, COUNT(*) FROM inbox_events GROUP BY status")},
                "runs": {r[0]: r[1] for r in self._x(conn, "SELECT status, COUNT(*) FROM inbox_runs GROUP BY status")},
            }

        return self._read(_job)


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _short(exc: Exception) -> str:
    from ..store.engine import mask

    orig = getattr(exc, "orig", None) or exc
    return mask(str(orig)).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
