"""The listener's own writer to the SQLite inbox: deliveries are stored on the event loop, and only
the fsync happens on another thread.

Handing every delivery to a writer thread and back costs more than storing it: the two threads
take turns at the GIL many times per delivery. So the loop stores them itself. Deliveries that
arrive while a batch waits for its fsync are queued; when the fsync is done the whole queue is
stored in one transaction (``PutJob.bulk``: a few multi-row statements), committed without a sync
(``synchronous=NORMAL``: the WAL is written, not flushed), and the syncer thread flushes the WAL
file with ``fdatasync``. Only then is each delivery answered. That is what ``synchronous=FULL``
does at commit (fsync the WAL), once for the whole batch, without blocking the loop on the disk.

- A batch that cannot take the write lock at once (another process is writing, e.g. a CLI
  command) tries again every ``BUSY_RETRY`` seconds; after ``BUSY_PATIENCE`` seconds, or on any
  other error, its deliveries and jobs go to the inbox's writer thread
  (``GroupCommitter.submit_here``; it flushes the WAL after each commit too), which waits for the
  lock and reports errors (disk full...) per delivery. Nothing is answered before it is durable.
- The loop's connection never checkpoints (a checkpoint fsyncs the database file); the syncer
  checkpoints (``PASSIVE``) every ``CHECKPOINT_EVERY`` batches, off the loop, between two flushes:
  a checkpoint on a thread of its own, beside the flushes, was tried; under a steady load it never
  found the WAL idle, so the WAL was never restarted and grew by every page written (80 MB for
  4,000 deliveries).
- The process's other writers (the worker threads, the pollers) hand their jobs to this writer
  too (``GroupCommitter.delegate``): they run in the next batch, each in its own savepoint, and
  are answered after its fsync, so that two connections of one process never wait on each other.
- Reads by other connections may see a batch before its fsync returned. The worker acts on what it
  reads only through its own writes (the claim, ``mark_dispatching``), which are answered after a
  later flush of the same WAL, this batch with them: nothing is dispatched for an event that is
  not on disk.
- Why a flush of the WAL file is enough: a commit that is answered had its frames and the WAL
  header flushed; frames of an earlier generation of the WAL were copied into the database, and
  the database synced, by a checkpoint before the WAL was restarted; a crash before the flush
  loses only frames that nobody was told were stored (SQLite ignores frames whose checksums or
  salts do not match).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..errors import ServiceError
from .records import _safe_meta, utcnow
from .sqlite import Inbox
from .sqlite_put import PutJob, PutResult
from .sqlite_writer import WalFile, flush_failed, in_savepoint, open_db, store_puts

log = logging.getLogger("pipeline_plugin.inbox")

#: how long a batch retries a busy database (every ``BUSY_RETRY`` s) before the writer thread takes it
BUSY_PATIENCE = 0.05
BUSY_RETRY = 0.001
#: checkpoint after this many batches (a batch adds a few dozen pages to the WAL; SQLite's own
#: default is a checkpoint per 1000 pages)
CHECKPOINT_EVERY = 64


class _Item:
    __slots__ = ("events", "future", "meta", "result", "source")

    def __init__(self, source: str, events: list[Any], meta: dict[str, Any], future: asyncio.Future) -> None:
        self.source = source
        self.events = events
        self.meta = meta
        self.future = future
        self.result: Any = None  # the PutResult, or the exception for this delivery


class _Batch:
    """What one transaction stored: deliveries and other threads' jobs with their results."""

    __slots__ = ("items", "jobs")

    def __init__(self, items: list[_Item], jobs: list[tuple[Callable[[sqlite3.Connection], Any], Future, list]]) -> None:
        self.items = items
        self.jobs = jobs  # (fn, future, [result or exception])


class LoopWriter:
    """Stores deliveries for one event loop (the one that made it, on its thread); see the
    module's text. Made on the loop; ``submit`` may be called from any other thread."""

    def __init__(self, inbox: Inbox, loop: asyncio.AbstractEventLoop) -> None:
        self.inbox = inbox
        self.loop = loop
        self.thread_id = threading.get_ident()
        self.path = inbox.path
        self.queue: list[_Item] = []
        self.jobs: list[tuple[Callable[[sqlite3.Connection], Any], Future]] = []
        self.in_flight: _Batch | None = None
        self.scheduled = False
        self.syncing = False  # a committed batch waits for its fdatasync
        self.busy_since: float | None = None
        self.db: sqlite3.Connection | None = None
        self.file_id: tuple[int, int] | None = None
        self.closed = False
        self._syncer = _Syncer(self)
        inbox._committer.delegate = self  # the other threads' writes come here while it runs
        #: counts (tests and bench read them): batches committed here, deliveries in them,
        #: fdatasync calls, and deliveries handed to the writer thread instead
        self.batches = 0
        self.stored = 0
        self.syncs = 0
        self.handed_over = 0
        #: batches that found the write lock held by another connection (another process), and the
        #: seconds they waited for it (until they got it, or were handed to the writer thread)
        self.lock_waits = 0
        self.lock_wait_seconds = 0.0

    # ---- on the loop ----------------------------------------------------------------------------
    async def put(self, source: str, events: list[Any], meta: dict[str, Any]) -> PutResult:
        item = _Item(source, events, _safe_meta(meta), self.loop.create_future())
        self.queue.append(item)
        self._schedule()
        return await item.future

    def submit(self, fn: Callable[[sqlite3.Connection], Any]) -> Future | None:
        """Run ``fn(db)`` in the next batch (from another thread); the future resolves after that
        batch's fsync. None when called on the loop's own thread (it would wait for itself) or
        after ``close``: the caller uses the inbox's writer thread then."""
        if self.closed or threading.get_ident() == self.thread_id or not self.loop.is_running():
            return None
        future: Future = Future()
        try:
            self.loop.call_soon_threadsafe(self._add_job, fn, future)
        except RuntimeError:  # the loop is closed
            return None
        return future

    def _add_job(self, fn: Callable[[sqlite3.Connection], Any], future: Future) -> None:
        if self.closed:
            _chain_job(self.inbox._committer.submit_here(fn), future)
            return
        self.jobs.append((fn, future))
        self._schedule()

    def _schedule(self, delay: float = 0.0) -> None:
        if self.scheduled or self.syncing or not (self.queue or self.jobs):
            return
        self.scheduled = True
        if delay:
            self.loop.call_later(delay, self._flush)
        else:
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.scheduled = False
        if self.syncing:
            return
        items = [item for item in self.queue if not item.future.done()]  # a cancelled wait is dropped
        jobs = [(fn, future) for fn, future in self.jobs if not future.cancelled()]
        self.queue, self.jobs = [], []
        if not items and not jobs:
            return
        if self.closed:
            self._hand_over(items, jobs)
            return
        try:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _busy(exc) and self._patient():  # another process writes: try again shortly
                self.queue, self.jobs = items + self.queue, jobs + self.jobs
                self._schedule(BUSY_RETRY)
            else:
                self._hand_over(items, jobs)
            return
        except (sqlite3.Error, OSError):
            self._hand_over(items, jobs)
            return
        self._waited()
        try:
            batch = self._store(db, items, jobs)
            db.execute("COMMIT")  # written to the WAL, not yet flushed: nobody is answered yet
        except Exception:  # noqa: BLE001 - rolled back; the writer thread stores them and reports any error
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._hand_over(items, [(fn, future) for fn, future in jobs if future.running() or not future.done()])
            return
        self.batches += 1
        self.stored += len(items)
        self.syncing = True
        self.in_flight = batch
        self._syncer.sync(batch)

    def _store(self, db: sqlite3.Connection, items: list[_Item],
               jobs: list[tuple[Callable[[sqlite3.Connection], Any], Future]]) -> _Batch:
        now = utcnow()
        puts = [PutJob(item.source, item.events, item.meta, now) for item in items]
        for item, outcome in zip(items, store_puts(db, puts)):
            item.result = outcome
        done = []
        for fn, future in jobs:
            if future.set_running_or_notify_cancel():  # a caller that gave up meanwhile is dropped
                done.append((fn, future, [in_savepoint(db, fn)]))
        return _Batch(items, done)

    def _patient(self) -> bool:
        now = self.loop.time()
        if self.busy_since is None:
            self.busy_since = now
        return now - self.busy_since < BUSY_PATIENCE

    def _waited(self) -> None:
        if self.busy_since is not None:
            self.lock_waits += 1
            self.lock_wait_seconds += self.loop.time() - self.busy_since
            self.busy_since = None

    def _hand_over(self, items: list[_Item], jobs: list[tuple[Callable[[sqlite3.Connection], Any], Future]]) -> None:
        """The writer thread stores these (it waits for the lock, and answers errors per delivery)."""
        self._waited()
        self.handed_over += len(items)
        for item in items:
            _chain(self.inbox._committer.submit_here(PutJob(item.source, item.events, item.meta, utcnow())),
                   item.future, self.loop)
        for fn, future in jobs:
            _chain_job(self.inbox._committer.submit_here(fn), future)

    def _synced(self, batch: _Batch, error: BaseException | None) -> None:
        """On the loop, once the batch's fdatasync returned (or failed)."""
        if batch is not self.in_flight:  # answered already (by close)
            return
        self.in_flight = None
        self.syncing = False
        for item in batch.items:
            if item.future.done():
                continue
            if error is not None:  # committed but not known to be on disk: the sender must send it again
                item.future.set_exception(error)
            elif isinstance(item.result, BaseException):
                item.future.set_exception(item.result)
            else:
                item.future.set_result(item.result)
        for _, future, (result,) in batch.jobs:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            elif isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._schedule()

    def _connection(self) -> sqlite3.Connection:
        st = os.stat(self.path)  # a database deleted and made again is opened again
        if self.db is not None and (st.st_dev, st.st_ino) != self.file_id:
            self.db.close()
            self.db = None
            self._syncer.forget_wal()
        if self.db is None:
            db = open_db(self.path)
            db.execute("PRAGMA synchronous=NORMAL")  # the syncer flushes the WAL before any answer
            db.execute("PRAGMA busy_timeout=0")  # never wait on the loop: retry later or hand over
            db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints fsync the database: the syncer's job
            self.db, self.file_id = db, (st.st_dev, st.st_ino)
        return self.db

    # ---- anywhere -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop: other threads' jobs go to the writer thread again; the batch being flushed is
        answered once its fsync is done; what is queued is handed to the writer thread."""
        self.closed = True
        committer = self.inbox._committer
        if committer.delegate is self:
            committer.delegate = None
        self._syncer.stop()  # waits for the fsync under way
        if not self.loop.is_closed():
            if threading.get_ident() != self.thread_id:  # the loop answers what is flushed, and hands over the rest
                try:
                    self.loop.call_soon_threadsafe(self._flush)
                except RuntimeError:
                    pass
                return
            if self.in_flight is not None:
                self._synced(self.in_flight, self._syncer.last_error)
            items, jobs = [i for i in self.queue if not i.future.done()], list(self.jobs)
            self.queue, self.jobs = [], []
            if items or jobs:
                self._hand_over(items, jobs)
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
            self.db = None


def _copy_outcome(done: Future, target: Any) -> None:
    """``done``'s result or exception onto ``target`` (a concurrent or an asyncio future), unless
    it has an outcome already."""
    if target.done():
        return
    exc = done.exception()
    if exc is not None:
        target.set_exception(exc)
    else:
        target.set_result(done.result())


def _chain_job(source: Future, target: Future) -> None:
    source.add_done_callback(lambda done: _copy_outcome(done, target))


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _chain(source: Future, target: asyncio.Future, loop: asyncio.AbstractEventLoop) -> None:
    def on_done(done: Future) -> None:
        try:
            loop.call_soon_threadsafe(_copy_outcome, done, target)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    source.add_done_callback(on_done)


class _Syncer:
    """The thread that flushes the WAL (``fdatasync``) for each committed batch, and checkpoints."""

    def __init__(self, writer: LoopWriter) -> None:
        self.writer = writer
        self.cond = threading.Condition()
        self.pending: _Batch | None = None
        self.last_error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.wal = WalFile(writer.path)
        self.checkpoint_db: sqlite3.Connection | None = None

    def sync(self, items: _Batch) -> None:
        with self.cond:
            self.pending = items
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name=f"inbox-sync:{self.writer.path.name}", daemon=True)
                self.thread.start()
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=5)

    def forget_wal(self) -> None:
        with self.cond:
            self.wal.close()

    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    while self.pending is None and not self.stopping:
                        self.cond.wait()
                    items, self.pending = self.pending, None
                    if items is None:
                        return
                    error = self.last_error = self._flush_wal()
                try:
                    self.writer.loop.call_soon_threadsafe(self.writer._synced, items, error)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    pass
                if error is None:
                    self._maybe_checkpoint()
        finally:
            with self.cond:
                self.wal.close()
                if self.checkpoint_db is not None:
                    self.checkpoint_db.close()
                    self.checkpoint_db = None

    def _flush_wal(self) -> BaseException | None:
        try:
            self.wal.flush()
        except OSError as exc:
            return flush_failed(self.writer.path, exc)
        self.writer.syncs += 1
        return None

    def _maybe_checkpoint(self) -> None:
        if self.writer.syncs % CHECKPOINT_EVERY:
            return
        try:
            if self.checkpoint_db is None:
                self.checkpoint_db = open_db(self.writer.path)
            self.checkpoint_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except (sqlite3.Error, OSError) as exc:  # the next one tries again; the WAL only grows meanwhile
            log.debug("inbox checkpoint skipped: %s", exc)
