"""A bounded load loop against a stable address: counts every failed request (and which version
answered) during an update, a promotion or a canary. Shared by tests/targets and tests/e2e."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter


class LoadLoop:
    """``workers`` threads POST /score (each on a fresh connection, holding the request
    ``hold_s`` in the app) until stopped or ``max_requests`` were sent in total; ``sessions`` more
    threads do the same over keep-alive connections (a ``requests.Session`` each, as most clients)."""

    def __init__(self, port: int, key: str | None = None, workers: int = 4, hold_s: float = 0.05, max_requests: int = 5000,
                 body: str | None = None, sessions: int = 0, max_seconds: float = 300, pause_s: float = 0.0):
        self.port = port
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.body = body or json.dumps({"data": [[1, 2]], "sleep": hold_s})
        self.max_requests = max_requests
        self.deadline = time.monotonic() + max_seconds
        self.pause_s = pause_s
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.failures: list[str] = []
        self.versions: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]
        self.threads += [threading.Thread(target=self._run_session, daemon=True) for _ in range(sessions)]

    def _take(self) -> bool:
        if self.pause_s:
            time.sleep(self.pause_s)
        with self.lock:
            if self.sent >= self.max_requests or time.monotonic() > self.deadline:
                return False
            self.sent += 1
            return True

    def _count(self, status: int, data: bytes) -> None:
        with self.lock:
            if status == 200:
                self.ok += 1
                answer = json.loads(data)
                self.versions[str(answer.get("version", "?")) if isinstance(answer, dict) else "?"] += 1
            else:
                self.failures.append(f"HTTP {status}: {data[:200]!r}")

    def _run_session(self) -> None:
        import requests

        with requests.Session() as session:
            while not self.stop_event.is_set() and self._take():
                try:
                    resp = session.post(f"http://127.0.0.1:{self.port}/score", data=self.body, headers=self.headers, timeout=30)
                    self._count(resp.status_code, resp.content)
                except Exception as exc:  # noqa: BLE001 - every failure counts
                    with self.lock:
                        self.failures.append(f"keep-alive: {exc!r}")

    def _run(self) -> None:
        while not self.stop_event.is_set() and self._take():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("POST", "/score", body=self.body, headers=self.headers)
                resp = conn.getresponse()
                self._count(resp.status, resp.read())
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
