"""Run one poller: list the registry, store what is new in the inbox, wait, repeat.

* Each poll stores every listed version the inbox does not hold yet (one ``Inbox.put`` per event,
  so a crash loses nothing already stored); versions seen before are counted ``duplicate``. What this
  runner stored or saw stored already is remembered in memory, so a steady registry costs one
  listing per interval and no writes.
* A failing poll (registry down, refused credentials) is retried after ``min(interval, 5) * 2**(n-1)``
  seconds for the n-th failure in a row, at most ``max_backoff``; the first success resets it.
* ``health`` (JSON-ready) says what happened: ``state`` (``starting``, ``ok``, ``error``),
  ``last_success``, ``last_error``, ``last_error_at``, ``consecutive_errors``, ``next_poll`` and
  the totals ``seen``/``new``/``duplicate``/``errors``. ``serve`` stores it as the poller lease's
  status, where ``/metrics`` and ``pipeline-plugin events pollers`` read it.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from . import Poller, PollSettings, parse_time

log = logging.getLogger("pipeline_plugin.poll")

RETRY_BASE = 5.0
#: what ``Inbox.put`` records as the delivery's scheme: the events of a poll, not of a webhook
DELIVERY_META = {"scheme": "poll"}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def backoff(interval: float, max_backoff: float, failures: int) -> float:
    """Seconds to wait after ``failures`` failed polls in a row (0: the regular interval)."""
    if failures <= 0:
        return interval
    return min(max_backoff, min(interval, RETRY_BASE) * 2 ** (failures - 1))


class Runner:
    def __init__(self, poller: Poller, inbox: Any, settings: PollSettings,
                 progress: Callable[[str], None] | None = None) -> None:
        self.poller = poller
        self.inbox = inbox
        self.settings = settings
        self.progress = progress or (lambda message: log.info("%s", message))
        #: state slot or dedupe key -> dedupe key of what is stored (a state slot remembers its value)
        self.known: dict[str, str] = {}
        self.failures = 0
        self.health: dict[str, Any] = {
            "source": poller.name,
            "registry": poller.describe(),
            "state": "starting",
            "interval": settings.interval,
            "last_success": None,
            "last_error": None,
            "last_error_at": None,
            "consecutive_errors": 0,
            "next_poll": None,
            "seen": 0,
            "new": 0,
            "duplicate": 0,
            "skipped": 0,
            "errors": 0,
        }

    # ---- one poll --------------------------------------------------------------------------------
    def poll_once(self) -> dict[str, Any]:
        """Poll once; the counts of this poll (``seen``, ``new``, ``duplicate``, ``skipped`` (dated
        before ``since``), ``errors``) and
        ``error`` (the message, or None). Never raises for a registry's failure."""
        counts: dict[str, Any] = {"source": self.poller.name, "seen": 0, "new": 0, "duplicate": 0, "skipped": 0,
                                  "errors": 0, "error": None}
        started = time.time()
        try:
            for event in self.poller.list_versions():
                counts["seen"] += 1
                if self.settings.since is not None and (parse_time(event.time) or self.settings.since) < self.settings.since:
                    counts["skipped"] += 1  # dated before ``since``
                    continue
                key = event.dedupe_key()
                slot = event.state_slot() or key
                if self.known.get(slot) == key:
                    counts["duplicate"] += 1
                    continue
                result = self.inbox.put(self.poller.event_source, [event], DELIVERY_META)
                self.known[slot] = key
                if result.duplicate:
                    counts["duplicate"] += 1
                else:
                    counts["new"] += 1
                    self.progress(f"{self.poller.name}: new {event.kind} {event.model} version {event.version} "
                                  f"(event {result[0]})")
        except Exception as exc:  # noqa: BLE001 - a registry's failure is retried, never fatal
            counts["errors"] += 1
            counts["error"] = f"{type(exc).__name__}: {exc}" if not getattr(exc, "message", None) else str(exc.message)
        self._account(counts, started)
        return counts

    def _account(self, counts: dict[str, Any], started: float) -> None:
        h = self.health
        for key in ("seen", "new", "duplicate", "skipped", "errors"):
            h[key] += counts[key]
        if counts["error"] is None:
            self.failures = 0
            h.update(state="ok", last_success=iso(started), consecutive_errors=0)
            self.progress(f"{self.poller.name}: polled {self.poller.describe()}: {counts['seen']} listed, "
                          f"{counts['new']} new, {counts['duplicate']} known")
        else:
            self.failures += 1
            h.update(state="error", last_error=counts["error"], last_error_at=iso(time.time()),
                     consecutive_errors=self.failures)
        delay = self.delay()
        h["next_poll"] = iso(time.time() + delay)
        if counts["error"] is not None:
            self.progress(f"{self.poller.name}: poll of {self.poller.describe()} failed ({self.failures} in a row), "
                          f"retrying in {delay:.1f}s: {counts['error']}")

    def delay(self) -> float:
        return backoff(self.settings.interval, self.settings.max_backoff, self.failures)

    # ---- forever -----------------------------------------------------------------------------------
    def run_forever(self, stop: threading.Event, may_poll: Callable[[dict[str, Any]], bool] | None = None,
                    publish: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Poll until ``stop`` is set. ``may_poll(health)`` (e.g. taking the poller's lease) is asked
        before each poll; when it says no, another replica polls and this one waits an interval."""
        while not stop.is_set():
            try:
                if may_poll is not None and not may_poll(self.health):
                    stop.wait(self.settings.interval)
                    continue
                self.poll_once()
                if publish is not None:
                    publish(self.health)
            except Exception:  # noqa: BLE001 - the inbox itself failed: keep the thread, retry later
                log.exception("poller %s: could not store or publish; retrying", self.poller.name)
                self.failures += 1
            stop.wait(self.delay())
