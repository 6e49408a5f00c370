"""Deployment history: what ran where, when, why, and who or what caused it.

One sqlite file (``history.sqlite``) under the state dir holds two tables:

- ``records``: one row per stage outcome (``package``, ``deploy``, ``smoke-test``, ``promote``,
  ``rollback``, ``approval``, ``writeback``) for a service's environment, with the model version,
  the image digest, the run id and the event or person that caused it.
- ``approvals``: promotions held by an approval gate, until ``pipeline-plugin approve RUN``.

``pipeline-plugin status`` reads it; ``promote`` asks it whether the staging image passed its smoke
test. Writers use short transactions so the CLI, the worker and the local provider can share it.
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from . import settings
from .errors import NotFoundError

ACTIONS = ("fetch", "package", "deploy", "smoke-test", "promote", "rollback", "approval", "writeback")
#: actions after which an environment serves the record's image
SERVING_ACTIONS = ("deploy", "promote", "rollback")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    service TEXT NOT NULL,
    env TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL,
    model TEXT,
    version TEXT,
    image TEXT,
    image_id TEXT,
    scoring_uri TEXT,
    target TEXT,
    run_id TEXT,
    cause TEXT,
    reason TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS records_service_env ON records(service, env, id);
CREATE TABLE IF NOT EXISTS approvals (
    run_id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    decided_at TEXT,
    decided_by TEXT,
    request TEXT NOT NULL
);
"""


def use_state_dir(path: str | Path | None) -> None:
    """Make ``--state-dir`` the state dir of everything this command touches (history, targets)."""
    if path:
        os.environ[settings.STATE_DIR_ENV] = str(Path(path).resolve())


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def current_actor() -> str:
    """Who is acting when a person runs a command: CI's user variables first, else the login."""
    for var in ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILD_REQUESTEDFOR", "USER"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


@dataclass
class Record:
    service: str
    env: str
    action: str
    status: str  # passed/failed (smoke-test), succeeded/failed (others), pending/approved (approval)
    model: str | None = None
    version: str | None = None
    image: str | None = None
    image_id: str | None = None
    scoring_uri: str | None = None
    target: str | None = None
    run_id: str | None = None
    cause: str | None = None  # the event id, or "user:<name>" when a person ran the command
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    time: str = field(default_factory=now_iso)
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Approval:
    run_id: str
    service: str
    status: str  # pending, approved, rejected
    requested_at: str
    request: dict[str, Any]
    decided_at: str | None = None
    decided_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = (
    "time", "service", "env", "action", "status", "model", "version", "image", "image_id",
    "scoring_uri", "target", "run_id", "cause", "reason", "details",
)


class History:
    """The history store of one state dir."""

    def __init__(self, state_dir: str | Path | None = None) -> None:
        self.state_dir = Path(state_dir) if state_dir else settings.default_state_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / "history.sqlite"
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    # ---- records ----------------------------------------------------------------------------
    def record(self, record: Record | None = None, **fields: Any) -> Record:
        """Append one stage outcome; returns it with its ``id``."""
        rec = record or Record(**fields)
        if rec.action not in ACTIONS:
            raise ValueError(f"unknown history action {rec.action!r}; valid: {', '.join(ACTIONS)}")
        values = [getattr(rec, c) for c in _COLUMNS]
        values[_COLUMNS.index("details")] = json.dumps(rec.details, sort_keys=True, default=str)
        with self._connect() as db:
            cur = db.execute(
                f"INSERT INTO records ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})", values
            )
            rec.id = cur.lastrowid
        return rec

    @staticmethod
    def _row(row: sqlite3.Row) -> Record:
        data = dict(row)
        data["details"] = json.loads(data.get("details") or "{}")
        return Record(**data)

    def records(
        self,
        service: str | None = None,
        env: str | None = None,
        action: str | None = None,
        status: str | None = None,
        image_id: str | None = None,
        run_id: str | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        """Matching records, newest first."""
        where, params = [], []
        for column, value in (
            ("service", service), ("env", env), ("action", action), ("status", status),
            ("image_id", image_id), ("run_id", run_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT * FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._connect() as db:
            return [self._row(r) for r in db.execute(sql, params)]

    def last(self, service: str, env: str, **filters: Any) -> Record | None:
        found = self.records(service=service, env=env, limit=1, **filters)
        return found[0] if found else None

    def passed_smoke_test(self, service: str, env: str, image_id: str) -> Record | None:
        """The newest passing smoke test of exactly this image in this environment."""
        return self.last(service, env, action="smoke-test", status="passed", image_id=image_id)

    def serving(self, service: str, env: str) -> Record | None:
        """The newest successful deploy/promote/rollback of an environment: what it serves."""
        for rec in self.records(service=service, env=env):
            if rec.action in SERVING_ACTIONS and rec.status == "succeeded":
                return rec
        return None

    def serving_history(self, service: str, env: str) -> list[Record]:
        """Successful deploy/promote/rollback records of an environment, newest first."""
        return [r for r in self.records(service=service, env=env) if r.action in SERVING_ACTIONS and r.status == "succeeded"]

    def services(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT service FROM records ORDER BY service")]

    def environments(self, service: str) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT env FROM records WHERE service = ? ORDER BY env", (service,))]

    # ---- approvals --------------------------------------------------------------------------
    def request_approval(self, run_id: str, service: str, request: dict[str, Any]) -> Approval:
        """Hold a promotion. Asking again for the same run keeps the first request."""
        approval = Approval(run_id=run_id, service=service, status="pending", requested_at=now_iso(), request=request)
        with self._connect() as db:
            db.execute(
                "INSERT OR IGNORE INTO approvals (run_id, service, status, requested_at, request) VALUES (?, ?, ?, ?, ?)",
                (run_id, service, approval.status, approval.requested_at, json.dumps(request, sort_keys=True, default=str)),
            )
        return self.approval(run_id)

    def approval(self, run_id: str) -> Approval:
        with self._connect() as db:
            row = db.execute("SELECT * FROM approvals WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            pending = [a.run_id for a in self.approvals(status="pending")]
            hint = f" Pending: {', '.join(pending)}." if pending else " No promotion is waiting for approval."
            raise NotFoundError(f"no promotion waits for approval under run {run_id!r}.{hint}", run_id=run_id)
        data = dict(row)
        data["request"] = json.loads(data["request"])
        return Approval(**data)

    def approvals(self, service: str | None = None, status: str | None = None) -> list[Approval]:
        sql, params = "SELECT run_id FROM approvals", []
        where = []
        if service:
            where.append("service = ?")
            params.append(service)
        if status:
            where.append("status = ?")
            params.append(status)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY requested_at"
        with self._connect() as db:
            ids = [r[0] for r in db.execute(sql, params)]
        return [self.approval(i) for i in ids]

    def decide(self, run_id: str, status: str, by: str) -> Approval:
        """Mark a pending approval ``approved`` or ``rejected``; returns the updated approval.
        Deciding twice is a no-op that returns the first decision."""
        if status not in ("approved", "rejected", "done"):
            raise ValueError(status)
        self.approval(run_id)  # NotFoundError with the pending list
        with self._connect() as db:
            if status == "done":
                db.execute("UPDATE approvals SET status = 'done' WHERE run_id = ?", (run_id,))
            else:
                db.execute(
                    "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ? WHERE run_id = ? AND status = 'pending'",
                    (status, now_iso(), by, run_id),
                )
        return self.approval(run_id)


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 3)
