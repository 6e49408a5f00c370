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
from .sqlite_put import PutJob

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
    # a savepoint keeps the pages it changes to undo them (its sub-journal); past 64 KiB SQLite's
    # default spills that to a file it makes and deletes in /var/tmp, which a batch of deliveries
    # did in every transaction. In memory it costs nothing on disk: it is never synced anyway
    db.execute("PRAGMA temp_store=MEMORY")
    return db


class WalFile:
    """A database's WAL file, kept open to flush it (``fdatasync``) after a commit made with
    ``synchronous=NORMAL``: the flush that ``synchronous=FULL`` does inside the commit, while the
    commit holds the write lock, done after the lock is let go (other writers go on meanwhile).
    Opened again when the file is another one (the database was made again)."""

    __slots__ = ("path", "fd", "file_id")

    def __init__(self, db_path: Path) -> None:
        self.path = str(db_path) + "-wal"
        self.fd: int | None = None
        self.file_id: tuple[int, int] | None = None

    def flush(self) -> None:
        """``fdatasync`` of the WAL file; ``OSError`` when it fails."""
        st = os.stat(self.path)
        if self.fd is None or (st.st_dev, st.st_ino) != self.file_id:
            self.close()
            self.fd = os.open(self.path, os.O_RDONLY)
            self.file_id = (st.st_dev, st.st_ino)
        os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def flush_failed(path: Path, exc: OSError) -> ServiceError:
    return ServiceError(f"could not flush the inbox's log {str(path) + '-wal'!r} to disk: {exc}; nothing was "
                        "acknowledged, send it again")


class GroupCommitter(BatchWriter):
    """One per database file in this process: a writer thread that runs every job queued so far
    in one transaction (each job in its own savepoint), commits it (WAL + ``synchronous=NORMAL``),
    lets the write lock go, flushes the WAL (one ``fdatasync`` for the whole batch: what
    ``synchronous=FULL`` does, without making other writers wait for the disk) and only then
    resolves each job's future.

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
        self.wal = WalFile(path)  # the writer thread's
        self.flush_wal = False

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
                self.wal.close()
            if db is None:
                db, opened = open_db(self.path), self._file_id()
                # in WAL mode the WAL is flushed after each commit (_commit); a file system where
                # SQLite cannot use a WAL keeps FULL, the sync inside each commit
                self.flush_wal = db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
                if self.flush_wal:
                    db.execute("PRAGMA synchronous=NORMAL")
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
        self.wal.close()

    def _file_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _commit(self, db: sqlite3.Connection, batch: list[_Job]) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            error = ServiceError(f"the inbox {str(self.path)!r} is not writable: {exc}")
            for job in batch:
                job.future.set_exception(error)
            return
        try:
            puts = [job for job in batch if isinstance(job.fn, PutJob)]
            others = [job for job in batch if not isinstance(job.fn, PutJob)]
            outcomes = list(zip(puts, store_puts(db, [job.fn for job in puts])))
            outcomes += [(job, in_savepoint(db, job.fn)) for job in others]
            db.execute("COMMIT")  # written to the WAL and visible; durable after the flush below
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
        if self.flush_wal:
            try:
                self.wal.flush()  # nothing below is answered before it returned
            except OSError as exc:
                error = flush_failed(self.path, exc)
                for job in batch:
                    job.future.set_exception(error)
                return
        self.commits += 1
        self.jobs += len(batch)
        for job, outcome in outcomes:
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)


def in_savepoint(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]) -> Any:
    """``fn(db)`` in its own savepoint: its result, or the exception it raised (its writes rolled
    back, the transaction's others kept)."""
    db.execute("SAVEPOINT job")
    try:
        result = fn(db)
    except Exception as exc:  # noqa: BLE001 - that job's answer
        db.execute("ROLLBACK TO SAVEPOINT job")
        result = exc
    db.execute("RELEASE SAVEPOINT job")
    return result


def store_puts(db: sqlite3.Connection, puts: list[PutJob]) -> list[Any]:
    """Store deliveries in the open transaction: each one's ``PutResult``, or its exception. Several
    go in together (``PutJob.bulk``); when that does not apply or fails, it is rolled back and each
    is stored in its own savepoint, so that an error reaches only its own caller."""
    if len(puts) > 1:
        db.execute("SAVEPOINT bulk")
        try:
            results = PutJob.bulk(db, puts)
        except Exception:  # noqa: BLE001 - redone one by one below, where the error finds its delivery
            db.execute("ROLLBACK TO SAVEPOINT bulk")
            results = None
        db.execute("RELEASE SAVEPOINT bulk")
        if results is not None:
            return results
    return [in_savepoint(db, put) for put in puts]


_COMMITTERS: dict[str, GroupCommitter] = {}
_COMMITTERS_GUARD = threading.Lock()


def committer(path: Path) -> GroupCommitter:
    key = str(path.resolve())
    with _COMMITTERS_GUARD:
        committer = _COMMITTERS.get(key)
        if committer is None:
            committer = _COMMITTERS[key] = GroupCommitter(Path(key))
        return committer
