"""A bounded load loop against a stable address: counts every failed request during an update."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter


class LoadLoop:
    """``workers`` threads POST /score (each on a fresh connection, holding the request
    ``hold_s`` in the app) until stopped or ``max_requests`` were sent in total."""

    def __init__(self, port: int, key: str | None = None, workers: int = 4, hold_s: float = 0.05, max_requests: int = 5000,
                 body: str | None = None):
        self.port = port
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.body = body or json.dumps({"data": [[1, 2]], "sleep": hold_s})
        self.max_requests = max_requests
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.failures: list[str] = []
        self.versions: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        while not self.stop_event.is_set():
            with self.lock:
                if self.sent >= self.max_requests:
                    return
                self.sent += 1
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("POST", "/score", body=self.body, headers=self.headers)
                resp = conn.getresponse()
                data = resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                        answer = json.loads(data)
                        self.versions[str(answer.get("version", "?")) if isinstance(answer, dict) else "?"] += 1
                    else:
                        self.failures.append(f"HTTP {resp.status}: {data[:200]!r}")
            except Exception as exc:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.failures.append(repr(exc))
            finally:
                conn.close()

    def __enter__(self) -> "LoadLoop":
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + 10
        while self.ok < 5 and time.monotonic() < deadline:  # traffic is flowing before the switch
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)  # keep going a little after the switch
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=60)
