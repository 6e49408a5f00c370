"""Prometheus metrics for ``GET /metrics``, hand-written to keep the image lean.

Counters live in shared memory (one row per worker process, each written only by its own worker),
so any worker answers ``/metrics`` with the totals of all workers. Standard library only."""

from __future__ import annotations

import bisect
from multiprocessing.sharedctypes import RawArray

ROUTES = ("/score", "/", "/readyz", "/livez", "/swagger.json", "/metrics", "other")
STATUSES = (200, 201, 204, 400, 401, 403, 404, 405, 413, 415, 431, 500, 503, 504, 0)  # 0 = any other
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_ROUTE_INDEX = {r: i for i, r in enumerate(ROUTES)}
_STATUS_INDEX = {s: i for i, s in enumerate(STATUSES)}
_N_REQ = len(ROUTES) * len(STATUSES)
_HIST = _N_REQ  # len(BUCKETS) + 1 (+Inf) bucket counts for /score latency, then sum, then in-flight
_SUM = _HIST + len(BUCKETS) + 1
_INFLIGHT = _SUM + 1
ROW = _INFLIGHT + 1


def shared_block(workers: int):
    """The shared counters for ``workers`` processes (pass to each worker)."""
    return RawArray("d", ROW * workers)


class Metrics:
    def __init__(self, block, worker: int, workers: int):
        self.block = block
        self.base = worker * ROW
        self.workers = workers

    # --- recording (hot path: a few float stores) -------------------------------------------
    def score_started(self) -> None:
        self.block[self.base + _INFLIGHT] += 1

    def score_finished(self, seconds: float) -> None:
        b = self.block
        base = self.base
        b[base + _INFLIGHT] -= 1
        b[base + _HIST + bisect.bisect_left(BUCKETS, seconds)] += 1
        b[base + _SUM] += seconds

    def count(self, route: str, status: int) -> None:
        r = _ROUTE_INDEX.get(route, len(ROUTES) - 1)
        s = _STATUS_INDEX.get(status, len(STATUSES) - 1)
        self.block[self.base + r * len(STATUSES) + s] += 1

    # --- exposition ----------------------------------------------------------------------
    def _total(self, offset: int) -> float:
        return sum(self.block[w * ROW + offset] for w in range(self.workers))

    def render(self) -> bytes:
        out = [
            "# HELP pipeline_plugin_requests_total HTTP requests answered, by route and status code.",
            "# TYPE pipeline_plugin_requests_total counter",
        ]
        for ri, route in enumerate(ROUTES):
            for si, status in enumerate(STATUSES):
                n = self._total(ri * len(STATUSES) + si)
                if n:
                    label = str(status) if status else "other"
                    out.append(f'pipeline_plugin_requests_total{{route="{route}",status="{label}"}} {n:.0f}')
        out += [
            "# HELP pipeline_plugin_score_duration_seconds Time to answer POST /score, from request to response.",
            "# TYPE pipeline_plugin_score_duration_seconds histogram",
        ]
        cumulative = 0.0
        for i, le in enumerate(BUCKETS):
            cumulative += self._total(_HIST + i)
            out.append(f'pipeline_plugin_score_duration_seconds_bucket{{le="{le}"}} {cumulative:.0f}')
        cumulative += self._total(_HIST + len(BUCKETS))
        out.append(f'pipeline_plugin_score_duration_seconds_bucket{{le="+Inf"}} {cumulative:.0f}')
        out.append(f"pipeline_plugin_score_duration_seconds_sum {self._total(_SUM):.6f}")
        out.append(f"pipeline_plugin_score_duration_seconds_count {cumulative:.0f}")
        out += [
            "# HELP pipeline_plugin_score_in_flight Score requests being processed now.",
            "# TYPE pipeline_plugin_score_in_flight gauge",
            f"pipeline_plugin_score_in_flight {self._total(_INFLIGHT):.0f}",
            "# HELP pipeline_plugin_worker_score_requests_total POST /score requests answered, by worker process "
            "(shows how evenly connections spread).",
            "# TYPE pipeline_plugin_worker_score_requests_total counter",
            *(f'pipeline_plugin_worker_score_requests_total{{worker="{w}"}} '
              f'{sum(self.block[w * ROW + s] for s in range(len(STATUSES))):.0f}' for w in range(self.workers)),
            "# HELP pipeline_plugin_workers Worker processes serving requests.",
            "# TYPE pipeline_plugin_workers gauge",
            f"pipeline_plugin_workers {self.workers}",
        ]
        return ("\n".join(out) + "\n").encode("utf-8")
