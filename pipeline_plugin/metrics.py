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
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
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


class Metrics:
    """One registry per listener (tests start several in one process)."""

    def __init__(self, inbox: Inbox) -> None:
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

    def delivery(self, source: str, outcome: str) -> None:
        self.deliveries.labels(source=source, outcome=outcome).inc()

    def ack(self, source: str, seconds: float) -> None:
        self.ack_seconds.labels(source=source).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
