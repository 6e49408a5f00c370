"""Run one poller: list the registry, store what is new in the inbox, wait, repeat.

* Each poll stores every listed version the inbox does not hold yet (one ``Inbox.put`` per event,
  so a crash loses nothing already stored); versions seen before are counted ``duplicate``. What this
  runner stored or saw stored already is remembered in memory, so a steady registry costs one
  listing per interval and no writes.
* The first successful poll of a registry (no ``poll_state`` row for its source and registry) is a
  baseline when ``since`` is not set: what it lists is stored as ``ignored`` events and starts no
  pipeline (:mod:`pipeline_plugin.poll.baseline`); counted ``baseline``. Later polls -- after a
  restart too -- announce what is new as usual, except the versions of models the poll state says
  the poller did not cover before (a model added to its list, or every model but the listed ones
  when the list becomes ``all``): those are a baseline of their own.
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
from .baseline import covered, record_baseline, state_for

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
        #: the inbox's poll state; ``polled``: this registry's first poll is recorded there already;
        #: ``covered``: the models it says were polled (a list or "all"; for a state written before
        #: the list was kept, the models the inbox holds events of)
        self.state = state_for(inbox)
        self.polled = False
        self.covered: list[str] | str | None = None
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
            "baseline": 0,
            "errors": 0,
        }

    # ---- one poll --------------------------------------------------------------------------------
    def poll_once(self) -> dict[str, Any]:
        """Poll once; the counts of this poll (``seen``, ``new``, ``duplicate``, ``skipped`` (dated
        before ``since``), ``baseline`` (recorded without starting pipelines: the registry's first
        poll), ``errors``) and ``error`` (the message, or None). Never raises for a registry's failure."""
        counts: dict[str, Any] = {"source": self.poller.name, "seen": 0, "new": 0, "duplicate": 0, "skipped": 0,
                                  "baseline": 0, "errors": 0, "error": None}
        started = time.time()
        try:
            registry = self.poller.identity()
            if not self.polled:
                self._read_state(registry)
            if not self.polled and self.settings.since is None:
                self._baseline(counts, registry, started)
            else:
                self._announce(counts, registry, started)
        except Exception as exc:  # noqa: BLE001 - a registry's failure is retried, never fatal
            counts["errors"] += 1
            counts["error"] = f"{type(exc).__name__}: {exc}" if not getattr(exc, "message", None) else str(exc.message)
        self._account(counts, started)
        return counts

    def _read_state(self, registry: str) -> None:
        row = self.state.get(self.poller.name, registry)
        legacy = self.poller.describe()
        if row is None and legacy != registry and (row := self.state.get(self.poller.name, legacy)) is not None:
            # kept under the registry's display name by an older release: moved to this registry's
            # key, so that another registry of the same name does not take it too
            self.state.rename(self.poller.name, legacy, registry)
        if row is not None:
            self.polled, self.covered = True, row["models"]
        if self.polled and self.covered is None:
            # written before the models were kept: a model polled before has its versions stored,
            # so one the inbox holds nothing of is new to polling (a baseline, never a deployment
            # of every version it had)
            self.covered = self.state.models_held(self.poller.event_source)

    def _newly_covered(self, model: str) -> bool:
        """Whether ``model`` was not polled before (its versions are then a baseline of their own):
        the poll state names the models covered so far, and ``since`` (which replaces every
        baseline) is not set."""
        return self.settings.since is None and isinstance(self.covered, list) and model not in self.covered

    def _announce(self, counts: dict[str, Any], registry: str, started: float) -> None:
        """Store what the registry lists and the inbox does not hold yet (what rules then match)."""
        added: list[Any] = []  # the versions of models not polled before: a baseline, once all is listed
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
            if self._newly_covered(event.model):
                added.append(event)
                continue
            result = self.inbox.put(self.poller.event_source, [event], DELIVERY_META)
            self.known[slot] = key
            if result.duplicate:
                counts["duplicate"] += 1
            else:
                counts["new"] += 1
                self.progress(f"{self.poller.name}: new {event.kind} {event.model} version {event.version} "
                              f"(event {result[0]})")
        if added:
            self._baseline_models(counts, added, started)
        covers = covered(self.poller.models)
        if not self.polled:  # polled with ``since``: no baseline later either
            self.state.mark(self.poller.name, registry, iso(started) or "", "since", 0, covers)
        elif self.covered != covers:  # the list changed, or was not known
            self.state.set_models(self.poller.name, registry, covers)
        self.polled, self.covered = True, covers

    def _baseline_models(self, counts: dict[str, Any], events: list[Any], started: float) -> None:
        """The versions of models this poller did not cover before: stored as ignored, as a first
        poll's (a model added to its list must not deploy every version it had)."""
        at = iso(started) or ""
        stored = record_baseline(self.state, self.poller.event_source, events, at, DELIVERY_META)
        self._remember(events)
        counts["baseline"] += stored
        counts["duplicate"] += len(events) - stored
        models = sorted({event.model for event in events})
        self.progress(f"{self.poller.name}: first poll of {len(models)} model(s) newly polled in "
                      f"{self.poller.describe()} ({', '.join(models)}): {stored} existing version(s) recorded "
                      "as baseline without starting pipelines (set since: to deploy older versions)")

    def _baseline(self, counts: dict[str, Any], registry: str, started: float) -> None:
        """The registry's first poll: store what it holds as ignored events, then remember the poll."""
        events = list(self.poller.list_versions())  # all of it, or (raising) nothing: retried as a baseline
        at = iso(started) or ""
        stored = record_baseline(self.state, self.poller.event_source, events, at, DELIVERY_META)
        self._remember(events)
        covers = covered(self.poller.models)
        self.state.mark(self.poller.name, registry, at, "baseline", stored, covers)
        self.polled, self.covered = True, covers
        counts.update(seen=len(events), baseline=stored, duplicate=len(events) - stored)
        self.progress(f"{self.poller.name}: first poll of {registry}: {stored} existing version(s) recorded as "
                      "baseline without starting pipelines (set since: to deploy older versions)")

    def _remember(self, events: list[Any]) -> None:
        for event in events:
            key = event.dedupe_key()
            self.known[event.state_slot() or key] = key

    def _account(self, counts: dict[str, Any], started: float) -> None:
        h = self.health
        for key in ("seen", "new", "duplicate", "skipped", "baseline", "errors"):
            h[key] += counts[key]
        if counts["error"] is None:
            self.failures = 0
            h.update(state="ok", last_success=iso(started), consecutive_errors=0)
            self.progress(f"{self.poller.name}: polled {self.poller.describe()}: {counts['seen']} listed, "
                          f"{counts['new']} new, {counts['duplicate']} known"
                          + (f", {counts['baseline']} recorded as baseline" if counts["baseline"] else ""))
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
