"""Prometheus metrics of the listener (``GET /metrics``).

- ``pipeline_plugin_deliveries_total{source, outcome}``: every request to ``/webhooks/<source>``;
  outcomes ``accepted``, ``duplicate``, ``no_event`` (valid, announces no new version, e.g. a
  registry pull), ``handshake``, ``unauthorized``, ``bad_request``, ``too_large``, ``unknown_source``,
  ``error`` (the inbox could not store it: 503, the sender retries).
- ``pipeline_plugin_ack_seconds{source}``: histogram of the time from request start to the answer of
  deliveries that were stored (durably, so this includes the fsync).
- ``pipeline_plugin_inbox_depth``: events with work left.
- ``pipeline_plugin_events{status}`` and ``pipeline_plugin_pipeline_runs{status}``: what the inbox
  holds, read at scrape time (so they are right after a restart too).
- ``pipeline_plugin_poller_up{source}`` (1: the last poll worked, 0: it failed),
  ``pipeline_plugin_poller_consecutive_errors{source}``, ``pipeline_plugin_poller_last_success_timestamp_seconds{source}``,
  ``pipeline_plugin_poller_next_poll_timestamp_seconds{source}`` and ``pipeline_plugin_poller_info{source, registry,
  state, last_error}``: the pollers' health, read from their inbox leases (so any replica shows the one polling).
- SQLite inbox: ``pipeline_plugin_inbox_lock_waits_total`` (batches of deliveries that found the
  database's write lock held by another process, e.g. ``serve``'s worker process or a command, and
  waited), ``pipeline_plugin_inbox_lock_wait_seconds_total`` (how long in all) and
  ``pipeline_plugin_inbox_handed_over_total`` (deliveries that waited over 50 ms and went to the
  writer thread): what slows acknowledgements besides the disk.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .inbox import Inbox

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: label used for requests to a source name that does not exist (keeps label values bounded)
UNKNOWN_SOURCE = "(unknown)"


class _InboxCollector(Collector):
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("pipeline_plugin_inbox_depth", "Stored events the worker has not finished")
        depth.add_metric([], self.inbox.depth())
        yield depth
        counts = self.inbox.counts()
        events = GaugeMetricFamily("pipeline_plugin_events", "Stored events by status", labels=["status"])
        for status in ("pending", "matched", "unmatched", "ignored", "failed"):
            events.add_metric([status], counts["events"].get(status, 0))
        yield events
        runs = GaugeMetricFamily("pipeline_plugin_pipeline_runs", "Recorded pipeline runs by status", labels=["status"])
        statuses = {"recorded", "dispatching", "dispatched", "succeeded", "failed", "unknown", *counts["runs"]}
        for status in sorted(statuses):
            runs.add_metric([status], counts["runs"].get(status, 0))
        yield runs
        yield from _poller_metrics(self.inbox)


class _WriterCollector(Collector):
    """The SQLite inbox's loop writer's waits for the write lock (nothing before the first delivery)."""

    def __init__(self, writer: Callable[[], Any]) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        writer = self.writer()
        if writer is None:
            return
        for name, doc, value in (
            ("pipeline_plugin_inbox_lock_waits", "Batches of deliveries that waited for the inbox's write lock",
             writer.lock_waits),
            ("pipeline_plugin_inbox_lock_wait_seconds", "Seconds batches of deliveries waited for the write lock",
             writer.lock_wait_seconds),
            ("pipeline_plugin_inbox_handed_over", "Deliveries handed to the writer thread after waiting for the lock",
             writer.handed_over),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            yield family


def _epoch(value) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value)).timestamp() if value else 0.0
    except ValueError:
        return 0.0


def _poller_metrics(inbox: Inbox) -> Iterator[Metric]:
    if not hasattr(inbox, "leases"):
        return
    from .poll.service import pollers_status

    up = GaugeMetricFamily("pipeline_plugin_poller_up", "1 when the poller's last poll worked", labels=["source"])
    errors = GaugeMetricFamily("pipeline_plugin_poller_consecutive_errors", "Failed polls in a row (backoff)",
                               labels=["source"])
    success = GaugeMetricFamily("pipeline_plugin_poller_last_success_timestamp_seconds",
                                "When the poller last listed its registry", labels=["source"])
    upcoming = GaugeMetricFamily("pipeline_plugin_poller_next_poll_timestamp_seconds", "When the poller polls next",
                                 labels=["source"])
    info = GaugeMetricFamily("pipeline_plugin_poller_info", "The poller's registry, state and last error",
                             labels=["source", "registry", "state", "last_error"])
    for p in pollers_status(inbox):
        source = str(p.get("source"))
        up.add_metric([source], 1 if p.get("state") == "ok" else 0)
        errors.add_metric([source], float(p.get("consecutive_errors") or 0))
        success.add_metric([source], _epoch(p.get("last_success")))
        upcoming.add_metric([source], _epoch(p.get("next_poll")))
        info.add_metric([source, str(p.get("registry") or ""), str(p.get("state") or ""),
                         str(p.get("last_error") or "")[:200]], 1)
    yield from (up, errors, success, upcoming, info)


class Metrics:
    """One registry per listener (tests start several in one process)."""

    def __init__(self, inbox: Inbox, writer: Callable[[], Any] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "pipeline_plugin_deliveries",
            "Webhook deliveries by source and outcome",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "pipeline_plugin_ack_seconds",
            "Seconds from request start to the 2xx answer of stored deliveries",
            ["source"],
            buckets=ACK_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_InboxCollector(inbox))
        if writer is not None:  # the SQLite inbox's loop writer (inbox.loop_writer.LoopWriter), once made
            self.registry.register(_WriterCollector(writer))
        #: the labelled children (the objects labels() returns): labels() per delivery costs a
        #: lock and a lookup
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        child = self._children.get((metric, *labels))
        if child is None:
            child = self._children[(metric, *labels)] = metric.labels(*labels)
        return child

    def delivery(self, source: str, outcome: str) -> None:
        self._child(self.deliveries, source, outcome).inc()

    def ack(self, source: str, seconds: float) -> None:
        self._child(self.ack_seconds, source).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
