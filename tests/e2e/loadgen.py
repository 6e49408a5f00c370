"""A bounded load generator: threads POST /score at a stable address and count every failure."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter


class Load:
    def __init__(self, port: int, body: dict, workers: int = 4, max_requests: int = 20000, max_seconds: float = 300):
        self.port = port
        self.body = json.dumps(body)
        self.workers = workers
        self.max_requests = max_requests
        self.deadline = time.monotonic() + max_seconds
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.failures: list[str] = []
        self.versions: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(workers)]

    def _loop(self) -> None:
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            with self.lock:
                if self.sent >= self.max_requests:
                    return
                self.sent += 1
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("POST", "/score", body=self.body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                        self.versions[json.loads(data)["version"]] += 1
                    else:
                        self.failures.append(f"HTTP {resp.status}: {data[:200]!r}")
            except Exception as exc:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.failures.append(repr(exc))
            finally:
                conn.close()
            time.sleep(0.005)

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + 10
        while self.ok < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.5)
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=60)
