"""The writer-thread mechanics both inbox backends share: callers queue jobs (each with a
``future``), one daemon thread per writer takes everything queued so far as one batch, and the
backend's ``_run`` writes and commits it and answers each job. The thread keeps its connection
between batches and stops (releasing it) after ``IDLE_SECONDS`` without work; the next job starts a
new one. A forked child starts afresh (the parent's thread and connection are not in it).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from typing import Any


class BatchWriter:
    """Subclasses give ``_run(conn, batch) -> conn`` (write, commit, answer every job; return the
    connection to keep, or None) and ``_release(conn)``. ``commits`` and ``jobs`` count the
    transactions committed and the jobs they carried (tests count them)."""

    IDLE_SECONDS = 5.0

    def __init__(self, thread_name: str) -> None:
        self.thread_name = thread_name
        self.cond = threading.Condition()
        self.pending: list[Any] = []
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()
        self.commits = 0
        self.jobs = 0

    def _enqueue(self, job: Any) -> Future:
        with self.cond:
            if self.pid != os.getpid():  # a forked child: the parent's thread (and connection) is not here
                self.pid, self.thread, self.pending = os.getpid(), None, []
            self.pending.append(job)
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
                self.thread.start()
            else:
                self.cond.notify()
        return job.future

    def _loop(self) -> None:
        conn: Any = None
        try:
            while True:
                with self.cond:
                    if not self.pending:
                        self.cond.wait(self.IDLE_SECONDS)
                    if not self.pending:
                        self.thread = None  # idle: a later job starts a new thread
                        return
                    batch, self.pending = self.pending, []
                # a caller that gave up before its job started (a cancelled await) is dropped
                batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
                if batch:
                    conn = self._run(conn, batch)
        finally:
            if conn is not None:
                self._release(conn)

    def _run(self, conn: Any, batch: list[Any]) -> Any:
        raise NotImplementedError

    def _release(self, conn: Any) -> None:
        raise NotImplementedError
