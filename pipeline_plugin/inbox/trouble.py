"""What the worker logs while the inbox cannot store (disk full, read-only, database down): one
warning line per kind of failure while it lasts, not a traceback on every retry, and one line when
it can store again.

    trouble = trouble_for(inbox)   # shared by every worker thread on the same state dir / database
    trouble.failed(exc)            # logs the first failure of its kind; repeats only at debug level
    trouble.recovered()            # after a loop that worked: logs once that the inbox stores again
"""

from __future__ import annotations

import errno
import logging
import threading
from typing import Any

from ..errors import PipelinePluginError

log = logging.getLogger("pipeline_plugin.worker")

#: (kind, what to do, lower-case words in the error that name it); the first that fits wins
KINDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("disk full", "free space there", ("database or disk is full", "no space left on device", "disk is full",
                                       "could not extend file", "diskfull")),
    ("read-only", "make it writable", ("readonly database", "read-only", "not writable")),
    ("the database does not answer", "check that it runs and accepts connections",
     ("does not answer", "connection refused", "connection failed", "could not connect", "accepting connections",
      "server closed the connection", "terminating connection", "connection is closed")),
)


def failure_kind(exc: BaseException) -> tuple[str, str] | None:
    """``(kind, fix)`` when ``exc`` says the inbox cannot store for a reason outside the program,
    else None (a bug or an unexpected failure, which deserves its traceback)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return KINDS[0][:2]
    text = str(getattr(exc, "message", None) or exc).lower()
    for kind, fix, words in KINDS:
        if any(w in text for w in words):
            return kind, fix
    return None


def where(inbox: Any) -> str:
    """The place the inbox stores to, for log lines: its state dir, or its (masked) database URL."""
    if getattr(inbox, "backend", "sqlite") == "postgresql":
        return f"database {inbox.path}"
    return f"state dir {getattr(inbox, 'state_dir', None) or inbox.path}"


class Trouble:
    """The failures of one inbox location that are going on now (thread-safe)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._active: dict[str, str] = {}
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        found = failure_kind(exc)
        message = (str(getattr(exc, "message", None) or exc) or type(exc).__name__).splitlines()[0]
        key = found[0] if found else f"{type(exc).__name__}: {message}"
        with self._lock:
            first = key not in self._active
            self._active[key] = message
        if not first:
            log.debug("inbox still cannot store (%s): %s", self.where, message)
        elif found:
            log.warning("inbox cannot store: %s (%s); retrying (%s): %s", found[0], self.where, found[1], message)
        elif isinstance(exc, PipelinePluginError):
            log.warning("worker loop failed (%s): %s; retrying", self.where, message)
        else:  # a bug: its traceback once, not on every retry
            log.error("worker loop failed (%s); retrying, logged again only when it changes or recovers",
                      self.where, exc_info=exc)

    def recovered(self) -> None:
        if not self._active:  # the common case: nothing to say, no lock
            return
        with self._lock:
            kinds, self._active = list(self._active), {}
        if kinds:
            log.warning("inbox can store again (%s), after: %s", self.where, "; ".join(kinds))


_shared: dict[str, Trouble] = {}
_shared_lock = threading.Lock()


def trouble_for(inbox: Any) -> Trouble:
    """The one :class:`Trouble` of the inbox's location in this process (every worker thread opens
    its own handle on the same inbox; one line per failure kind is for all of them)."""
    at = where(inbox)
    with _shared_lock:
        if at not in _shared:
            _shared[at] = Trouble(at)
        return _shared[at]
