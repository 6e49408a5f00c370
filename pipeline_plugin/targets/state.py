"""On-disk state of one (service, env) of a local target (``docker``, ``process``).

``<state dir>/targets/<target>/<service>/<env>/`` holds:

- ``deployment.json``: the active deployment (what the stable address points at), its port and
  the nginx config generation;
- ``history.jsonl``: one line per deployment that was replaced or deleted, with when and by what;
- ``lock``: held while a verb changes this (service, env), so two updates never interleave;
- the nginx prefix of the stable address (``nginx.conf``, ``nginx.pid``, logs, temp files).
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import StageFailed
from . import Deployment, DeploymentSpec, ProgressFn, check_name, check_spec, state_root
from .nginx_proxy import StableAddress


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ServiceState:
    def __init__(self, root: Path, service: str, env: str) -> None:
        self.service = service
        self.env = env
        self.directory = Path(root) / service / env

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.directory / "deployment.json").read_text())
        except (OSError, ValueError):
            return None

    def write(self, record: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / "deployment.json.new"
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        os.replace(tmp, self.directory / "deployment.json")

    def clear(self) -> None:
        try:
            (self.directory / "deployment.json").unlink()
        except FileNotFoundError:
            pass

    def append_history(self, deployment: dict[str, Any], event: str, **extra: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        line = {"event": event, "at": now(), **extra, "deployment": deployment}
        with open(self.directory / "history.jsonl", "a") as fh:
            fh.write(json.dumps(line, sort_keys=True) + "\n")

    def history(self) -> list[dict[str, Any]]:
        try:
            text = (self.directory / "history.jsonl").read_text()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def all_states(root: Path, service: str | None = None) -> list[ServiceState]:
    """Every (service, env) under ``root`` with an active deployment, sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for svc in sorted(p for p in root.iterdir() if p.is_dir()):
        if service is not None and svc.name != service:
            continue
        for env in sorted(p for p in svc.iterdir() if p.is_dir()):
            if (env / "deployment.json").exists():
                out.append(ServiceState(root, svc.name, env.name))
    return out


def _quiet(_msg: str) -> None:
    pass


class LocalTarget:
    """The verbs the local targets (``docker``, ``process``) share: per-(service, env) state under
    ``<state dir>/targets/<name>`` and a stable nginx address in that folder.

    A subclass defines ``name``, ``_apply(spec, progress)`` (create or replace under the lock),
    ``_stop_all(state)`` (stop every instance of the (service, env)) and ``_problems(record)`` (why
    the recorded instances are not running now, empty when they are)."""

    name: str

    def __init__(self, state_dir: Path | None = None, ready_timeout: float = 180.0) -> None:
        self._state_dir = state_dir
        self.ready_timeout = ready_timeout

    @property
    def root(self) -> Path:
        return state_root(self.name, self._state_dir)

    def _state(self, service: str, env: str) -> ServiceState:
        return ServiceState(self.root, check_name("service", service), check_name("env", env))

    def _address(self, state: ServiceState) -> StableAddress:
        return StableAddress(state.directory, f"{state.service}/{state.env}")

    # -- verbs -------------------------------------------------------------------------------
    def create(self, spec: DeploymentSpec, progress: ProgressFn | None = None) -> Deployment:
        """Deploy ``spec``; if the same thing already runs, return it unchanged."""
        return self._apply(check_spec(spec), progress or _quiet)

    def update(self, spec: DeploymentSpec, progress: ProgressFn | None = None) -> Deployment:
        """Replace what runs with zero failed requests (a no-op when it already runs ``spec``)."""
        return self._apply(check_spec(spec), progress or _quiet)

    def get(self, service: str, env: str) -> Deployment | None:
        state = self._state(service, env)
        record = state.read()
        return None if record is None else self._refresh(state, record)

    def list(self, service: str | None = None) -> list[Deployment]:
        if service is not None:
            check_name("service", service)
        out = []
        for state in all_states(self.root, service):
            record = state.read()
            if record is not None:
                out.append(self._refresh(state, record))
        return out

    def delete(self, service: str, env: str) -> None:
        """Stop the stable address and every instance of (service, env); idempotent."""
        state = self._state(service, env)
        with state.locked():
            self._address(state).stop()
            record = state.read()
            self._stop_all(state)
            if record is not None:
                state.append_history(record["deployment"], "deleted")
            state.clear()
            for name in ("nginx.conf", "nginx.pid"):
                (state.directory / name).unlink(missing_ok=True)

    def history(self, service: str, env: str) -> list[dict[str, Any]]:
        """Deployments that served (service, env) before, oldest first (replaced or deleted)."""
        return self._state(service, env).history()

    # -- for subclasses ----------------------------------------------------------------------
    def _apply(self, spec: DeploymentSpec, progress: ProgressFn) -> Deployment:
        raise NotImplementedError

    def _stop_all(self, state: ServiceState) -> None:
        raise NotImplementedError

    def _problems(self, record: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def _refresh(self, state: ServiceState, record: dict[str, Any]) -> Deployment:
        """The recorded deployment with its status checked against its instances and nginx now."""
        d = Deployment(**record["deployment"])
        problems = self._problems(record)
        if not self._address(state).running():
            problems.append(f"nginx for 127.0.0.1:{record['port']} is not running")
        d.status = "running" if not problems else "failed"
        if problems:
            d.details = {**d.details, "problems": problems}
        return d


def wait_ready(
    url_host: str, port: int, timeout: float, is_alive: Callable[[], str | None], progress: Callable[[str], None], what: str
) -> None:
    """Poll ``GET /readyz`` until 200; ``is_alive()`` returning a reason string aborts early."""
    deadline = time.monotonic() + timeout
    last_note = time.monotonic()
    last = "no answer yet"
    while True:
        reason = is_alive()
        if reason:
            raise StageFailed(f"{what} stopped before it was ready: {reason}")
        conn = http.client.HTTPConnection(url_host, port, timeout=5)
        try:
            conn.request("GET", "/readyz")
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                return
            last = f"GET /readyz answered {resp.status}"
        except OSError as exc:
            last = f"GET /readyz: {exc.__class__.__name__}"
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise StageFailed(f"{what} was not ready within {timeout:.0f}s ({last})")
        if time.monotonic() - last_note > 5:
            progress(f"waiting for {what} to be ready ({last})")
            last_note = time.monotonic()
        time.sleep(0.2)
