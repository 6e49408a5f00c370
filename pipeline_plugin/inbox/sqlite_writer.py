"""The SQLite inbox's writer: group commit (one fsync for every write queued meanwhile).

``committer(path)`` gives the one :class:`GroupCommitter` of a database file in this process (the
PostgreSQL inbox's counterpart is ``pg_writer``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..errors import ServiceError
from .batching import BatchWriter

T = TypeVar("T")


class _Job:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.future: Future = Future()


def open_db(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise ServiceError(f"cannot open the inbox {str(path)!r}: {exc}") from None
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=30000")
    db.execute("PRAGMA foreign_keys=ON")
    return db


class GroupCommitter(BatchWriter):
    """One per database file in this process: a writer thread that runs every job queued so far
    in one transaction (each job in its own savepoint), commits it (WAL + ``synchronous=FULL``:
    one fsync for the whole batch) and only then resolves each job's future.

    Callers either wait (:meth:`run`, for threads) or get the future (:meth:`submit`, which the
    listener awaits on its event loop, so that a waiting delivery holds no thread); the queue and
    the thread are :class:`~.batching.BatchWriter`'s."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"inbox-writer:{path.name}")
        self.path = path
        #: while ``serve`` runs, its event loop's writer (``loop_writer.LoopWriter``) takes the jobs
        #: of the other threads (the workers, the pollers): one writer in the process, no lock
        #: contention between two connections
        self.delegate: Any = None

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> Future[T]:
        delegate = self.delegate
        if delegate is not None:
            future = delegate.submit(fn)  # None on the loop's own thread, or once it stopped
            if future is not None:
                return future
        return self.submit_here(fn)

    def submit_here(self, fn: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """On this committer's own thread, whatever the delegate."""
        return self._enqueue(_Job(fn))

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self.submit(fn).result()

    def _run(self, conn: tuple[sqlite3.Connection, tuple[int, int] | None] | None, batch: list[_Job]) -> Any:
        db, opened = conn if conn is not None else (None, None)
        try:
            if db is not None and self._file_id() != opened:  # deleted and made again: write the new file
                db.close()
                db = None
            if db is None:
                db, opened = open_db(self.path), self._file_id()
            self._commit(db, batch)
        except BaseException as exc:  # noqa: BLE001 - every waiting caller gets an answer
            error = exc if isinstance(exc, ServiceError) else ServiceError(
                f"could not write to the inbox {str(self.path)!r}: {type(exc).__name__}: {exc}")
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(error)
        return None if db is None else (db, opened)

    def _release(self, conn: tuple[sqlite3.Connection, Any]) -> None:
        conn[0].close()

    def _file_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    @staticmethod
    def _bulk(db: sqlite3.Connection, batch: list[_Job], results: list[tuple[_Job, Any, BaseException | None]]
              ) -> list[_Job]:
        """Jobs whose type has ``bulk(db, fns) -> results | None`` (the inbox's deliveries) are run
        together when there are several; the jobs left to run one by one are returned. A bulk run
        that fails is rolled back and its jobs run one by one, so an error reaches its own caller."""
        groups: dict[Any, list[_Job]] = {}
        for job in batch:
            bulk = getattr(type(job.fn), "bulk", None)
            if bulk is not None:
                groups.setdefault(bulk, []).append(job)
        done: set[int] = set()
        for bulk, jobs in groups.items():
            if len(jobs) < 2:
                continue
            db.execute("SAVEPOINT bulk")
            try:
                values = bulk(db, [job.fn for job in jobs])
            except Exception:  # noqa: BLE001 - retried job by job below, where it reaches its caller
                db.execute("ROLLBACK TO SAVEPOINT bulk")
                values = None
            db.execute("RELEASE SAVEPOINT bulk")
            if values is None:
                continue
            for job, value in zip(jobs, values):
                results.append((job, value, None))
                done.add(id(job))
        return [job for job in batch if id(job) not in done] if done else batch

    def _commit(self, db: sqlite3.Connection, batch: list[_Job]) -> None:
        results: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            error = ServiceError(f"the inbox {str(self.path)!r} is not writable: {exc}")
            for job in batch:
                job.future.set_exception(error)
            return
        try:
            for job in self._bulk(db, batch, results):
                db.execute("SAVEPOINT job")
                try:
                    results.append((job, job.fn(db), None))
                except Exception as exc:  # noqa: BLE001 - handed to that job's caller
                    db.execute("ROLLBACK TO SAVEPOINT job")
                    results.append((job, None, exc))
                db.execute("RELEASE SAVEPOINT job")
            db.execute("COMMIT")  # the fsync: nothing below is answered before it returned
        except BaseException as exc:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            error = exc if not isinstance(exc, sqlite3.Error) else ServiceError(
                f"could not commit to the inbox {str(self.path)!r}: {exc}"
            )
            for job in batch:
                job.future.set_exception(error)
            return
        self.commits += 1
        self.jobs += len(batch)
        for job, result, exc in results:
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)


_COMMITTERS: dict[str, GroupCommitter] = {}
_COMMITTERS_GUARD = threading.Lock()


def committer(path: Path) -> GroupCommitter:
    key = str(path.resolve())
    with _COMMITTERS_GUARD:
        committer = _COMMITTERS.get(key)
        if committer is None:
            committer = _COMMITTERS[key] = GroupCommitter(Path(key))
        return committer
