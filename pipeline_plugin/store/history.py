"""Deployment history: what ran where, when, why, and who or what caused it.

Two tables of the store (:mod:`pipeline_plugin.store`):

- ``records``: one row per stage outcome (``package``, ``deploy``, ``smoke-test``, ``promote``,
  ``rollback``, ``approval``, ``writeback``, ``delete``) for a service's environment, with the model version,
  the image digest, the run id and the event or person that caused it.
- ``approvals``: promotions held by an approval gate, until ``pipeline-plugin approve RUN``.

``pipeline-plugin status`` reads it; ``promote`` asks it whether the staging image passed its smoke
test. Writers use short transactions so the CLI, the worker, the local provider and CI jobs on
other runners (PostgreSQL) can share it.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from .. import settings
from ..errors import NotFoundError
from . import Store, open_store
from .schema import approvals as approvals_table
from .schema import records as records_table

ACTIONS = ("fetch", "package", "deploy", "smoke-test", "promote", "rollback", "approval", "writeback", "delete")
#: actions after which an environment serves the record's image
SERVING_ACTIONS = ("deploy", "promote", "rollback")


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
    """The history of one store: ``History(state_dir)`` opens the state dir's store (or the
    database of ``$PIPELINE_PLUGIN_DATABASE_URL``); ``History(store=...)`` uses an open one."""

    def __init__(self, state_dir: str | Path | None = None, store: Store | None = None) -> None:
        self.state_dir = Path(state_dir) if state_dir else settings.default_state_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)  # as before the store: callers write beside it
        self.store = store or open_store(self.state_dir)
        self._engine = self.store.engine

    # ---- records ----------------------------------------------------------------------------
    def record(self, record: Record | None = None, **fields: Any) -> Record:
        """Append one stage outcome; returns it with its ``id``."""
        rec = record or Record(**fields)
        if rec.action not in ACTIONS:
            raise ValueError(f"unknown history action {rec.action!r}; valid: {', '.join(ACTIONS)}")
        values = {c: getattr(rec, c) for c in _COLUMNS}
        values["details"] = json.dumps(rec.details, sort_keys=True, default=str)
        with self._engine.begin() as db:
            rec.id = db.execute(insert(records_table).values(**values)).inserted_primary_key[0]
        return rec

    @staticmethod
    def _row(row: Any) -> Record:
        data = dict(row._mapping)
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
        query = select(records_table)
        for column, value in (
            ("service", service), ("env", env), ("action", action), ("status", status),
            ("image_id", image_id), ("run_id", run_id),
        ):
            if value is not None:
                query = query.where(records_table.c[column] == value)
        query = query.order_by(records_table.c.id.desc())
        if limit:
            query = query.limit(int(limit))
        with self._engine.connect() as db:
            return [self._row(r) for r in db.execute(query)]

    def last(self, service: str, env: str, **filters: Any) -> Record | None:
        found = self.records(service=service, env=env, limit=1, **filters)
        return found[0] if found else None

    def passed_smoke_test(self, service: str, env: str, image_id: str) -> Record | None:
        """The newest passing smoke test of exactly this image in this environment."""
        return self.last(service, env, action="smoke-test", status="passed", image_id=image_id)

    def serving(self, service: str, env: str) -> Record | None:
        """The newest successful deploy/promote/rollback of an environment: what it serves (None
        when the environment was deleted since)."""
        found = self.serving_history(service, env, limit=1)
        if not found:
            return None
        deleted = self.last(service, env, action="delete", status="succeeded")
        return None if deleted is not None and (deleted.id or 0) > (found[0].id or 0) else found[0]

    def serving_history(self, service: str, env: str, limit: int | None = None) -> list[Record]:
        """Successful deploy/promote/rollback records of an environment, newest first."""
        c = records_table.c
        query = (
            select(records_table)
            .where(c.service == service, c.env == env, c.action.in_(SERVING_ACTIONS), c.status == "succeeded")
            .order_by(c.id.desc())
        )
        if limit:
            query = query.limit(int(limit))
        with self._engine.connect() as db:
            return [self._row(r) for r in db.execute(query)]

    def services(self) -> list[str]:
        with self._engine.connect() as db:
            return list(db.scalars(select(records_table.c.service).distinct().order_by(records_table.c.service)))

    def environments(self, service: str) -> list[str]:
        c = records_table.c
        with self._engine.connect() as db:
            return list(db.scalars(select(c.env).distinct().where(c.service == service).order_by(c.env)))

    # ---- approvals --------------------------------------------------------------------------
    def request_approval(self, run_id: str, service: str, request: dict[str, Any]) -> Approval:
        """Hold a promotion. Asking again for the same run keeps the first request."""
        values = dict(run_id=run_id, service=service, status="pending", requested_at=now_iso(),
                      request=json.dumps(request, sort_keys=True, default=str))
        if self.store.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        with self._engine.begin() as db:
            db.execute(dialect_insert(approvals_table).values(**values).on_conflict_do_nothing(index_elements=["run_id"]))
        return self.approval(run_id)

    def approval(self, run_id: str) -> Approval:
        with self._engine.connect() as db:
            row = db.execute(select(approvals_table).where(approvals_table.c.run_id == run_id)).first()
        if row is None:
            pending = [a.run_id for a in self.approvals(status="pending")]
            hint = f" Pending: {', '.join(pending)}." if pending else " No promotion is waiting for approval."
            raise NotFoundError(f"no promotion waits for approval under run {run_id!r}.{hint}", run_id=run_id)
        data = dict(row._mapping)
        data["request"] = json.loads(data["request"])
        return Approval(**data)

    def approvals(self, service: str | None = None, status: str | None = None) -> list[Approval]:
        c = approvals_table.c
        query = select(c.run_id)
        if service:
            query = query.where(c.service == service)
        if status:
            query = query.where(c.status == status)
        with self._engine.connect() as db:
            ids = list(db.scalars(query.order_by(c.requested_at)))
        return [self.approval(i) for i in ids]

    def decide(self, run_id: str, status: str, by: str) -> Approval:
        """Mark a pending approval ``approved`` or ``rejected``; returns the updated approval.
        Deciding twice is a no-op that returns the first decision."""
        if status not in ("approved", "rejected", "done"):
            raise ValueError(status)
        self.approval(run_id)  # NotFoundError with the pending list
        c = approvals_table.c
        with self._engine.begin() as db:
            if status == "done":
                db.execute(update(approvals_table).where(c.run_id == run_id).values(status="done"))
            else:
                db.execute(
                    update(approvals_table)
                    .where(c.run_id == run_id, c.status == "pending")
                    .values(status=status, decided_at=now_iso(), decided_by=by)
                )
        return self.approval(run_id)


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 3)
