"""The pollers ``serve`` runs itself (the ``poll:`` section of its config), one thread per source.

One poller per source across all replicas sharing an inbox: before each poll a replica takes (or
renews) the inbox lease ``poll:<source>``; the holder's health is the lease's ``status``, which
``/metrics`` and ``pipeline-plugin events pollers`` show. A replica that does not hold the lease
waits an interval and asks again, so when the holder stops (or dies: its lease expires) another
takes over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Any, Mapping

from . import PollSettings, build
from .runner import Runner

log = logging.getLogger("pipeline_plugin.poll")

LEASE_PREFIX = "poll:"
#: how long a lease outlives the wait before the holder's next poll (covers one slow poll)
LEASE_GRACE = 120.0


def lease_name(source: str) -> str:
    return LEASE_PREFIX + source


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def pollers_status(inbox: Any) -> list[dict[str, Any]]:
    """The pollers' health as their leases hold it: ``[{source, owner, lease_until, **status}]``."""
    out = []
    for lease in inbox.leases():
        if lease["name"].startswith(LEASE_PREFIX):
            out.append({**lease["status"], "source": lease["name"][len(LEASE_PREFIX):], "owner": lease["owner"],
                        "lease_until": lease["until"]})
    return out


class PollerThread:
    """One source's runner under the lease, in a daemon thread."""

    def __init__(self, inbox: Any, settings: PollSettings, owner: str) -> None:
        self.inbox = inbox
        self.settings = settings
        self.owner = owner
        self.name = lease_name(settings.source)
        self.runner = Runner(build(settings), inbox, settings)
        self.holding = False

    def _lease(self, health: Mapping[str, Any]) -> bool:
        held = self.inbox.try_lease(self.name, self.owner, self.runner.delay() + LEASE_GRACE, dict(health))
        if held and not self.holding:
            log.info("poller %s: polling %s (lease held by %s)", self.settings.source, self.runner.poller.describe(),
                     self.owner)
        self.holding = held
        return held

    def run(self, stop: threading.Event) -> None:
        try:
            self.runner.run_forever(stop, may_poll=self._lease, publish=self._lease)
        finally:
            if self.holding:
                try:
                    self.inbox.release_lease(self.name, self.owner)
                except Exception:  # noqa: BLE001 - shutting down: the lease expires anyway
                    log.warning("poller %s: could not release its lease", self.settings.source)


def start_pollers(inbox: Any, config: Mapping[str, PollSettings], stop: threading.Event) -> list[threading.Thread]:
    """Start one thread per configured source; returns the threads (daemon, ended by ``stop``)."""
    owner = new_owner()
    threads = []
    for source, settings in config.items():
        poller = PollerThread(inbox, settings, owner)
        t = threading.Thread(target=poller.run, args=(stop,), name=f"poller-{source}", daemon=True)
        t.start()
        threads.append(t)
    return threads
