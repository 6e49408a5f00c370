"""Group commit for the PostgreSQL inbox: one writer thread per database URL in this process puts
every delivery queued so far in one transaction, commits it, and only then answers each one.

The batch is written set-wise: one ``SELECT`` finds the deliveries and changes already stored, one
``INSERT ... ON CONFLICT DO NOTHING RETURNING`` adds the new events (in arrival order: their
``seq`` orders each model's work), one statement adds the history rows and the deliveries. Five
round trips (with the models' locks, below) and one commit (one WAL flush) for the whole batch, on a
connection the writer keeps (no pool checkout or pre-ping per delivery).

What can't be done set-wise (a repeated state change, which compares with the slot's latest
change) or fails (a value PostgreSQL refuses) makes the writer roll the batch back and do it again
one delivery at a time, each in its own savepoint: a bad delivery fails alone. Another replica's
insert of the same change makes ``ON CONFLICT`` wait for its commit and skip the row, so a change
that reaches two replicas is stored once; a deadlock between them (PostgreSQL aborts one) is
retried. Nothing here answers a delivery before the commit that holds it returned.

Each model's events are handed out in ``seq`` order, and a sequence number is taken when a row is
inserted, not when it commits: two replicas storing versions of one model at once may commit the
later number first. So a transaction first takes a lock per model it stores events of
(``pg_advisory_xact_lock_shared``: writers never wait for each other), held until it commits; a
claim (``postgres.PostgresInbox.claim``) takes its models' locks exclusively for a moment, so it
waits for those commits, then checks that no event it did not read comes before the ones it did.
Every lock a writer takes is taken before its first insert, so a writer holding a row another one
waits for never waits for a lock itself: no cycle.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from ..errors import ServiceError
from ..events import ModelVersionEvent
from ..store.engine import lock_key
from .batching import BatchWriter
from .records import utcnow
from .sqlite_put import PutResult
from .sqlite_put import event_id_for_key as _event_id_for_key

#: deadlock_detected, serialization_failure: PostgreSQL aborted this transaction for another's sake
RETRY_SQLSTATES = ("40P01", "40001")


class PutJob:
    __slots__ = ("events", "future", "meta", "now", "source")

    def __init__(self, source: str, events: list[ModelVersionEvent], meta: Mapping[str, Any], now: str) -> None:
        self.source, self.events, self.meta, self.now = source, events, meta, now
        self.future: Future = Future()


class _SlowPath(Exception):
    """The batch needs the one-delivery-at-a-time path."""


#: one delivery in its own transaction or savepoint: ``(conn, source, events, meta, now) -> PutResult``
SlowPut = Callable[[Any, str, list, Mapping[str, Any], str], PutResult]


class PgGroupCommitter(BatchWriter):
    """The writer of one PostgreSQL inbox in this process. ``commits`` and ``jobs`` count the
    transactions committed and the deliveries they carried; ``slow_batches`` the batches done one
    delivery at a time."""

    def __init__(self, engine: Any, where: str, slow_put: SlowPut) -> None:
        super().__init__("inbox-writer:postgresql")
        self.engine = engine
        self.where = where  # the masked URL, for messages
        self.slow_put = slow_put
        self.slow_batches = 0

    def submit(self, job: PutJob) -> Future:
        return self._enqueue(job)

    def _release(self, conn: Any) -> None:
        _close(conn)

    def _run(self, conn: Any, batch: list[PutJob]) -> Any:
        """Write and commit ``batch``, answer every job; returns the connection to keep (or None)."""
        from sqlalchemy.exc import DBAPIError

        for attempt in range(5):
            try:
                if conn is None:
                    conn = self.engine.connect()  # the pool's pre-ping, once per writer connection
                results = self._commit(conn, batch)
            except DBAPIError as exc:
                _rollback(conn)
                retry = getattr(exc.orig, "sqlstate", None) in RETRY_SQLSTATES or exc.connection_invalidated
                if exc.connection_invalidated:  # the server restarted or the connection dropped: a new one
                    _close(conn)
                    conn = None
                if retry and attempt < 4:  # a put is idempotent (delivery ids), even after a lost COMMIT answer
                    time.sleep(0.01 * (attempt + 1))
                    continue
                self._fail(batch, ServiceError(f"the inbox in {self.where} cannot store: {_short(exc)}"))
                return conn
            except BaseException as exc:  # noqa: BLE001 - every waiting caller gets an answer
                _rollback(conn)
                self._fail(batch, exc if isinstance(exc, ServiceError) else ServiceError(
                    f"could not write to the inbox in {self.where}: {type(exc).__name__}: {exc}"))
                return conn
            self.commits += 1
            self.jobs += len(batch)
            for job, result in zip(batch, results):
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
            return conn
        raise AssertionError("unreachable")

    @staticmethod
    def _fail(batch: list[PutJob], error: BaseException) -> None:
        for job in batch:
            if not job.future.done():
                job.future.set_exception(error)

    def _commit(self, conn: Any, batch: list[PutJob]) -> list[Any]:
        """One transaction for the batch: set-wise, else one savepoint per delivery. Returns each
        job's PutResult or exception; raises (nothing committed) when the batch as a whole failed."""
        from sqlalchemy.exc import DBAPIError, StatementError

        try:
            with conn.begin():
                lock_models(conn, batch)
                results: list[Any] = put_batch(conn, batch)
            return results
        except StatementError as exc:  # PostgreSQL (or psycopg, e.g. a NUL character) refused something
            if isinstance(exc, DBAPIError) and (
                    exc.connection_invalidated or getattr(exc.orig, "sqlstate", None) in RETRY_SQLSTATES):
                raise
        except _SlowPath:
            pass
        self.slow_batches += 1
        results = []
        with conn.begin():
            lock_models(conn, batch)  # before the savepoints: a lock taken in one is let go at its rollback
            for job in batch:
                savepoint = conn.begin_nested()
                try:
                    result = self.slow_put(conn, job.source, job.events, job.meta, job.now)
                except DBAPIError as exc:
                    savepoint.rollback()
                    if exc.connection_invalidated or getattr(exc.orig, "sqlstate", None) in RETRY_SQLSTATES:
                        raise
                    results.append(ServiceError(f"the inbox in {self.where} cannot store: {_short(exc)}"))
                except Exception as exc:  # noqa: BLE001 - handed to that delivery's caller
                    savepoint.rollback()
                    results.append(exc)
                else:
                    savepoint.commit()
                    results.append(result)
        return results


def _text(sql: str) -> Any:
    from sqlalchemy import text

    return text(sql)


def _arrays(prefix: str, n: int) -> str:
    return ", ".join(f"CAST(:{prefix}{i} AS text[])" for i in range(n))


#: what is stored already: the batch's deliveries ('d') and changes ('e')
_KNOWN = _text(
    "SELECT 'd' AS tag, d.source AS a, d.delivery_id AS b, d.event_id AS id FROM inbox_deliveries d"
    " JOIN unnest(CAST(:s AS text[]), CAST(:d AS text[])) AS w(s, d) ON d.source = w.s AND d.delivery_id = w.d"
    " UNION ALL SELECT 'e', e.dedupe_key, NULL, e.id FROM inbox_events e WHERE e.dedupe_key = ANY(CAST(:k AS text[]))"
)
#: the batch in one statement: new events (arrival order; the ids inserted are returned), history
#: rows ("received" turns "duplicate event" where another replica's insert won), deliveries
_WRITE = _text(
    "WITH ev AS (INSERT INTO inbox_events(id, dedupe_key, source, kind, model, version, registry_key, delivery_id,"
    " event_json, received_at) SELECT id, k, src, kind, model, version, reg, did, ej, at FROM unnest("
    + _arrays("c", 10) + ") WITH ORDINALITY AS r(id, k, src, kind, model, version, reg, did, ej, at, n) ORDER BY n"
    " ON CONFLICT DO NOTHING RETURNING id),"
    " h AS (INSERT INTO inbox_history(event_id, at, what, data_json)"
    " SELECT e, a, CASE WHEN w = 'received' AND NOT EXISTS (SELECT 1 FROM ev WHERE ev.id = r.e) THEN 'duplicate event'"
    " ELSE w END, CASE WHEN w = 'received' AND NOT EXISTS (SELECT 1 FROM ev WHERE ev.id = r.e) THEN j2 ELSE j END"
    " FROM unnest(" + _arrays("h", 5) + ") WITH ORDINALITY AS r(e, a, w, j, j2, n) ORDER BY n),"
    " dl AS (INSERT INTO inbox_deliveries(source, delivery_id, received_at, event_id, meta_json)"
    " SELECT * FROM unnest(" + _arrays("d", 5) + ") ON CONFLICT DO NOTHING)"
    " SELECT id FROM ev"
)


#: the models' locks, shared (see the module's text)
_LOCK = _text("SELECT pg_advisory_xact_lock_shared(k) FROM unnest(CAST(:k AS bigint[])) AS k")


def model_lock_key(source: str, registry_key: str, model: str) -> int:
    """The advisory lock key of a model (its source, registry and name), the same in every process."""
    return lock_key("\x1f".join(("pipeline-plugin:model", source, registry_key, model)))


def lock_models(conn: Any, batch: list[PutJob]) -> None:
    """Hold, until this transaction ends, the lock of every model ``batch`` has events of (shared:
    it waits only while a claim of one of those models takes it); before any insert."""
    keys = sorted({model_lock_key(e.source, e.registry_key(), e.model) for job in batch for e in job.events})
    if keys:
        conn.execute(_LOCK, {"k": keys}).all()


def put_batch(conn: Any, batch: list[PutJob]) -> list[PutResult]:
    """The deliveries of ``batch`` as if put one after another, in two statements. Raises
    _SlowPath for what only the one-at-a-time path does (a repeated state change)."""
    pairs = list(dict.fromkeys((job.source, e.delivery_id) for job in batch for e in job.events))
    keys = list(dict.fromkeys(e.dedupe_key() for job in batch for e in job.events))
    if not pairs:
        return [PutResult([], duplicate=False) for _ in batch]
    delivered: dict[tuple[str, str], str] = {}
    known: dict[str, str] = {}
    for row in conn.execute(_KNOWN, {"s": [p[0] for p in pairs], "d": [p[1] for p in pairs], "k": keys}):
        tag, a, b, eid = row
        if tag == "d":
            delivered[(a, b)] = eid
        else:
            known[a] = eid

    # each job as if alone and in order: (ids, steps); a step is (what, event id, delivery id, meta)
    plans: list[tuple[list[str], list[tuple[str, str, str, Mapping[str, Any]]]]] = []
    new_events: dict[str, tuple] = {}  # event id -> its row, in arrival order
    deliveries: dict[tuple[str, str], tuple] = {}
    for job in batch:
        ids: list[str] = []
        steps: list[tuple[str, str, str, Mapping[str, Any]]] = []
        fresh: set[str] = set()
        meta_json = json.dumps(job.meta, default=str)
        for event in job.events:
            pair = (job.source, event.delivery_id)
            if event.delivery_id not in fresh and pair in delivered:
                ids.append(delivered[pair])
                steps.append(("duplicate delivery", delivered[pair], event.delivery_id, {}))
                continue
            key = event.dedupe_key()
            existing = known.get(key)
            if existing is not None and event.state_slot() is not None:
                raise _SlowPath(key)
            if existing is None:
                eid = _event_id_for_key(key)
                new_events[eid] = (eid, key, event.source, event.kind, event.model, event.version,
                                   event.registry_key(), event.delivery_id, event.to_json(), job.now)
                known[key] = eid
                steps.append(("received", eid, event.delivery_id, job.meta))
            else:
                eid = existing
                steps.append(("duplicate event", eid, event.delivery_id, {}))
            deliveries.setdefault(pair, (job.source, event.delivery_id, job.now, eid, meta_json))
            delivered[pair] = eid
            fresh.add(event.delivery_id)
            ids.append(eid)
        plans.append((ids, steps))

    at = utcnow()
    history: list[tuple[str, str, str, str, str]] = []  # event id, at, what, data, data if the insert was skipped
    for _ids, steps in plans:
        for what, eid, did, meta in steps:
            plain = json.dumps({"delivery_id": did}, sort_keys=True)
            data = json.dumps({"delivery_id": did, **meta}, sort_keys=True, default=str) if what == "received" else plain
            history.append((eid, at, what, data, plain))
    rows = sorted(deliveries.values())  # one order for every replica: fewer lock waits between them
    params: dict[str, list] = {f"c{i}": list(col) for i, col in enumerate(zip(*new_events.values()))} if new_events \
        else {f"c{i}": [] for i in range(10)}
    params.update({f"h{i}": [h[i] for h in history] for i in range(5)})
    params.update({f"d{i}": [r[i] for r in rows] for i in range(5)})
    inserted = {r[0] for r in conn.execute(_WRITE, params)}

    results = []
    for ids, steps in plans:
        # a change another replica stored a moment ago (its insert skipped) is a duplicate here
        new = sum(1 for what, eid, _did, _meta in steps if what == "received" and eid in inserted)
        results.append(PutResult(ids, duplicate=bool(ids) and new == 0))
    return results


def _rollback(conn: Any) -> None:
    if conn is None:
        return
    try:
        if conn.in_transaction():
            conn.rollback()
    except Exception:  # noqa: BLE001, S110 - the connection is broken; it is replaced
        pass


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001, S110 - closing a broken connection
        pass


def _short(exc: Exception) -> str:
    from ..store.engine import mask

    orig = getattr(exc, "orig", None) or exc
    return mask(str(orig)).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


_COMMITTERS: dict[str, PgGroupCommitter] = {}
_GUARD = threading.Lock()


def committer_for(url: str, engine: Any, where: str, slow_put: SlowPut) -> PgGroupCommitter:
    """The writer of ``url`` in this process (made on first use)."""
    with _GUARD:
        found = _COMMITTERS.get(url)
        if found is None or found.engine is not engine:
            found = _COMMITTERS[url] = PgGroupCommitter(engine, where, slow_put)
        return found
