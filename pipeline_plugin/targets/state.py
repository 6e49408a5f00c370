"""State of one (service, env) of a local target (``docker``, ``process``).

The records live in the store (:mod:`pipeline_plugin.store.targets`), so a later process with another
state dir and the same database (``--database-url``) sees them:

- the active deployment (what the stable address points at), its port, the nginx config
  generation and ``prefix``: the folder of its stable address;
- the deployments that were replaced or deleted, with when and by what;
- a lock held while a verb changes this (service, env), so two updates never interleave (across
  every process sharing the database: see ``Store.lock``).

The stable address's folder (``nginx.conf``, ``nginx.pid``, logs, temp files; the process target's
instances) is recorded with the deployment and defaults to :func:`~pipeline_plugin.targets.address_root`:
``<state dir>/targets/<target>/<service>/<env>`` with the embedded store (as before the store
existed), else a host folder (``$PIPELINE_PLUGIN_PROXY_DIR``) named after the database. A
``deployment.json`` / ``history.jsonl`` written before the store existed is imported once.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import StageFailed
from ..store import Store, open_store
from ..store.targets import TargetRecords
from . import Deployment, DeploymentSpec, ProgressFn, address_root, check_name, check_spec, state_root
from .nginx_proxy import StableAddress


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ServiceState:
    def __init__(self, records: TargetRecords, service: str, env: str, default_root: Path, legacy_root: Path | None = None) -> None:
        self.records = records
        self.service = service
        self.env = env
        self.legacy = None if legacy_root is None else Path(legacy_root) / service / env
        record = self.read()
        prefix = (record or {}).get("prefix")
        self.directory = Path(prefix) if prefix else Path(default_root) / service / env

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self.records.lock(self.service, self.env):
            self.directory.mkdir(parents=True, exist_ok=True)
            yield

    def read(self) -> dict[str, Any] | None:
        record = self.records.read(self.service, self.env)
        if record is None and self.legacy is not None:
            record = self._import_legacy()
        return record

    def _import_legacy(self) -> dict[str, Any] | None:
        """A ``deployment.json`` (and ``history.jsonl``) from before the store: moved into it, once."""
        old = self.legacy / "deployment.json"
        try:
            record = json.loads(old.read_text())
        except (OSError, ValueError):
            return None
        record.setdefault("prefix", str(self.legacy))
        try:
            lines = (self.legacy / "history.jsonl").read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            extra = {k: v for k, v in item.items() if k not in ("event", "at", "deployment")}
            self.records.append_history(self.service, self.env, item.get("deployment") or {}, item.get("event", "replaced"), **extra)
        self.records.write(self.service, self.env, record)
        os.replace(old, old.with_name("deployment.json.imported"))
        if lines:
            os.replace(self.legacy / "history.jsonl", self.legacy / "history.jsonl.imported")
        return record

    def write(self, record: dict[str, Any]) -> None:
        record["prefix"] = str(self.directory)
        record["host"] = socket.gethostname()
        self.records.write(self.service, self.env, record)

    def clear(self) -> None:
        self.records.clear(self.service, self.env)

    def append_history(self, deployment: dict[str, Any], event: str, **extra: Any) -> None:
        self.records.append_history(self.service, self.env, deployment, event, **extra)

    def history(self) -> list[dict[str, Any]]:
        return self.records.history(self.service, self.env)


def _quiet(_msg: str) -> None:
    pass


class LocalTarget:
    """The verbs the local targets (``docker``, ``process``) share: per-(service, env) records in the
    store and a stable nginx address in the recorded folder.

    A subclass defines ``name``, ``_apply(spec, progress)`` (create or replace under the lock),
    ``_stop_all(state)`` (stop every instance of the (service, env)) and ``_problems(record)`` (why
    the recorded instances are not running now, empty when they are)."""

    name: str

    def __init__(self, state_dir: Path | None = None, ready_timeout: float = 180.0) -> None:
        self._state_dir = state_dir
        self.ready_timeout = ready_timeout

    def store(self) -> Store:
        """The store of this target's state dir (or of ``$PIPELINE_PLUGIN_DATABASE_URL``), opened now:
        the module-level ``TARGET`` follows the command's ``--state-dir`` / ``--database-url``."""
        return open_store(self._state_dir)

    def records(self) -> TargetRecords:
        return TargetRecords(self.store(), self.name)

    @property
    def root(self) -> Path:
        """Where new stable addresses get their folders (``<root>/<service>/<env>``)."""
        return address_root(self.name, self.store(), self._state_dir)

    def _state(self, service: str, env: str) -> ServiceState:
        store = self.store()
        legacy = state_root(self.name, self._state_dir) if store.embedded else None
        return ServiceState(
            TargetRecords(store, self.name), check_name("service", service), check_name("env", env),
            address_root(self.name, store, self._state_dir), legacy,
        )

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
        if self.store().embedded:  # folders from before the store: imported on first sight
            legacy = state_root(self.name, self._state_dir)
            for old in sorted(legacy.glob("*/*/deployment.json")) if legacy.is_dir() else []:
                if service is None or old.parent.parent.name == service:
                    self._state(old.parent.parent.name, old.parent.name)
        out = []
        for svc, env in self.records().keys(service):
            state = self._state(svc, env)
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
        here = socket.gethostname()
        if record.get("host") not in (None, here):  # its pids, containers and nginx are on that host
            d.status = "failed"
            d.details = {**d.details, "problems": [
                f"{d.service}/{d.env} was deployed on host {record['host']!r} and this is {here!r}: a {self.name} "
                f"deployment is reachable only on its host (run this job there, or use the kubernetes target)"
            ]}
            return d
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
