"""The listener's worker in a process of its own (what ``pipeline-plugin serve`` runs).

Matching rules and dispatching pipelines in threads of the listener's process makes every
acknowledgement wait: the event loop shares one interpreter lock with them. ``serve`` therefore
starts its worker threads in a child process (``python -m pipeline_plugin.worker_process``) that
opens the same inbox (the state dir's SQLite file, or the shared PostgreSQL database):

- **Wake-ups** go through the child's stdin: the listener writes a byte after each stored delivery
  (never blocking: a full pipe already holds a wake-up); the child sets its workers' ``wake``.
- **Lifetime**: the child stops when its stdin reaches EOF, so it never outlives its listener, even
  one killed with SIGKILL; on SIGTERM or SIGINT it stops too. Stopping is bounded (``--shutdown-timeout``):
  a pipeline still running is left, and its event stays claimed in the inbox until the lease is
  taken over, as when a process dies.
- **Priority**: it runs at a lower CPU priority (``serve --worker-nice``, default 10), so that
  on busy CPUs the acknowledgements go first.
- **Supervision**: a child that exits while the listener runs is logged with its exit status and
  started again (after 1 s, doubling up to 30 s while it keeps failing at once); meanwhile
  ``/healthz`` says the worker is down. Deliveries are still stored and acknowledged.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Sequence

log = logging.getLogger("pipeline_plugin.worker")

#: restart delays of a worker process that exits: from FIRST, doubled per quick failure, up to MAX
RESTART_FIRST = 1.0
RESTART_MAX = 30.0
#: a child that ran this long before exiting is restarted after RESTART_FIRST again
RESTART_RESET_AFTER = 60.0


class WorkerProcess:
    """Starts, wakes, supervises and stops the worker child of one listener."""

    def __init__(self, state_dir: str | Path, triggers: str | Path | None, workers: int,
                 allowed_roots: Sequence[str] = (), log_level: str = "info", shutdown_timeout: float = 10.0,
                 nice: int = 0) -> None:
        self.argv = [sys.executable, "-m", "pipeline_plugin.worker_process", "--state-dir", str(state_dir),
                     "--workers", str(workers), "--log-level", log_level, "--shutdown-timeout", str(shutdown_timeout),
                     "--nice", str(nice)]
        if triggers is not None:
            self.argv += ["--triggers", str(triggers)]
        for root in allowed_roots:
            self.argv += ["--allowed-root", str(root)]
        self.shutdown_timeout = shutdown_timeout
        self.proc: subprocess.Popen | None = None
        self._pipe: IO[bytes] | None = None
        self._lock = threading.Lock()  # the pipe is replaced on restart while the loop writes to it
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    # ---- the listener's side --------------------------------------------------------------------
    def start(self) -> None:
        self._spawn()
        self._supervisor = threading.Thread(target=self._supervise, name="worker-process", daemon=True)
        self._supervisor.start()

    def wake(self) -> None:
        """Tell the child that something was stored (never blocks, never fails)."""
        with self._lock:
            if self._pipe is None:
                return
            try:
                os.write(self._pipe.fileno(), b"w")
            except (OSError, ValueError):  # BlockingIOError, BrokenPipeError; ValueError: closed
                pass  # a full pipe holds a wake-up already; a dead child is restarted and drains anyway

    def alive(self) -> bool:
        proc = self.proc
        return proc is not None and proc.poll() is None

    def exit_status(self) -> int | None:
        proc = self.proc
        return None if proc is None else proc.poll()

    def stop(self) -> None:
        """SIGTERM the child, wait for it (bounded), then SIGKILL what is left."""
        self._stopping.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.shutdown_timeout + 5)
            except subprocess.TimeoutExpired:
                log.warning("worker process %d did not stop within %.0f s; killed", proc.pid,
                            self.shutdown_timeout + 5)
                proc.kill()
                proc.wait()
        if proc is not None:
            log.info("worker stopped (process %d exited with status %s)", proc.pid, proc.returncode)
        self._close_pipe()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=5)

    # ---- inside ---------------------------------------------------------------------------------
    def _spawn(self) -> None:
        proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, close_fds=True)
        assert proc.stdin is not None
        os.set_blocking(proc.stdin.fileno(), False)
        with self._lock:
            old, self._pipe, self.proc = self._pipe, proc.stdin, proc
        if old is not None:
            old.close()
        log.info("worker process %d started", proc.pid)

    def _close_pipe(self) -> None:
        with self._lock:
            pipe, self._pipe = self._pipe, None
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass

    def _supervise(self) -> None:
        delay = RESTART_FIRST
        while not self._stopping.is_set():
            proc = self.proc
            assert proc is not None
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > RESTART_RESET_AFTER:
                delay = RESTART_FIRST
            log.error("worker process %d exited with status %s; starting it again in %.0f s (deliveries are "
                      "still stored meanwhile)", proc.pid, code, delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, RESTART_MAX)
            try:
                self._spawn()
            except OSError as exc:
                log.error("could not start the worker process again: %s", exc)


# ---- the child ---------------------------------------------------------------------------------
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pipeline_plugin.worker_process",
                                 description="the worker of `pipeline-plugin serve` (started by it; stops at EOF on stdin)")
    ap.add_argument("--state-dir", type=Path, required=True)
    ap.add_argument("--triggers", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--allowed-root", action="append", default=[])
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ap.add_argument("--shutdown-timeout", type=float, default=10.0)
    ap.add_argument("--nice", type=int, default=0, help="lower this process's CPU priority by N (0-19)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.nice > 0:
        # when the CPUs are busy, the listener's acknowledgements go first (senders wait on them and
        # time out); matching is not in a hurry and catches up as soon as they are not busy
        os.nice(args.nice)
    from .rules import load_rules
    from .worker import start_workers

    stop = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rules = load_rules(args.triggers) if args.triggers is not None else []
    workers, threads = start_workers(args.state_dir, rules, args.triggers, args.workers, tuple(args.allowed_root), stop)
    # what startup made (modules, rules) lives as long as the process: the collector need not
    # walk it again after each batch of claimed events (a sixth of its profile before)
    gc.freeze()

    def listen() -> None:  # wake-ups from the listener; EOF: the listener is gone
        while True:
            try:
                data = os.read(0, 4096)
            except InterruptedError:
                continue
            except OSError:
                data = b""
            for w in workers:
                w.wake.set()
            if not data:
                stop.set()
                return

    threading.Thread(target=listen, name="wake", daemon=True).start()
    while not stop.wait(1.0):
        if not any(t.is_alive() for t in threads):
            log.error("every worker thread stopped; the worker process exits (serve starts it again)")
            return 3
    for w in workers:
        w.wake.set()
    deadline = time.monotonic() + args.shutdown_timeout
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    left = sum(t.is_alive() for t in threads)
    if left:
        log.warning("worker process exits with %d pipeline(s) still running; their events are taken up again "
                    "after the lease", left)
    return 0


if __name__ == "__main__":
    sys.exit(main())
