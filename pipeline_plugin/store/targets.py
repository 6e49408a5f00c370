"""The local targets' (``docker``, ``process``) records in the store, per (target, service, env):
the active deployment (a JSON record), the deployments it replaced or that were deleted, and where
the target finds an image it deployed by digest."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import Store
from .schema import target_deployments, target_history, target_images


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class TargetRecords:
    def __init__(self, store: Store, target: str) -> None:
        self.store = store
        self.target = target
        self._engine = store.engine

    def lock(self, service: str, env: str):
        """Held while a verb changes (service, env): by every process sharing the database."""
        return self.store.lock(f"target:{self.target}:{service}:{env}")

    # -- the active deployment ---------------------------------------------------------------
    def read(self, service: str, env: str) -> dict[str, Any] | None:
        c = target_deployments.c
        with self._engine.connect() as db:
            text = db.scalar(select(c.record).where(c.target == self.target, c.service == service, c.env == env))
        return None if text is None else json.loads(text)

    def write(self, service: str, env: str, record: dict[str, Any]) -> None:
        c = target_deployments.c
        values = {"record": json.dumps(record, sort_keys=True, default=str), "updated_at": _now()}
        key = (c.target == self.target, c.service == service, c.env == env)
        with self._engine.begin() as db:  # callers hold lock(service, env): no concurrent insert
            if db.execute(update(target_deployments).where(*key).values(**values)).rowcount == 0:
                db.execute(insert(target_deployments).values(target=self.target, service=service, env=env, **values))

    def clear(self, service: str, env: str) -> None:
        c = target_deployments.c
        with self._engine.begin() as db:
            db.execute(delete(target_deployments).where(c.target == self.target, c.service == service, c.env == env))

    def keys(self, service: str | None = None) -> list[tuple[str, str]]:
        """(service, env) of every active deployment of this target, sorted."""
        c = target_deployments.c
        query = select(c.service, c.env).where(c.target == self.target)
        if service is not None:
            query = query.where(c.service == service)
        with self._engine.connect() as db:
            return [(r.service, r.env) for r in db.execute(query.order_by(c.service, c.env))]

    # -- replaced and deleted deployments ------------------------------------------------------
    def append_history(self, service: str, env: str, deployment: dict[str, Any], event: str, **extra: Any) -> None:
        at = _now()
        data = {"event": event, "at": at, **extra, "deployment": deployment}
        with self._engine.begin() as db:
            db.execute(insert(target_history).values(
                target=self.target, service=service, env=env, event=event, at=at,
                data=json.dumps(data, sort_keys=True, default=str),
            ))

    def history(self, service: str, env: str) -> list[dict[str, Any]]:
        """Oldest first."""
        c = target_history.c
        query = select(c.data).where(c.target == self.target, c.service == service, c.env == env).order_by(c.id)
        with self._engine.connect() as db:
            return [json.loads(text) for text in db.scalars(query)]

    # -- images by digest ----------------------------------------------------------------------
    def remember_image(self, image_id: str, location: str) -> None:
        c = target_images.c
        key = (c.target == self.target, c.image_id == image_id)
        values = {"location": location, "updated_at": _now()}
        for _attempt in range(2):  # two services may remember one digest at once: the loser updates
            try:
                with self._engine.begin() as db:
                    if db.execute(update(target_images).where(*key).values(**values)).rowcount == 0:
                        db.execute(insert(target_images).values(target=self.target, image_id=image_id, **values))
                return
            except IntegrityError:
                continue

    def image_location(self, image_id: str) -> str | None:
        c = target_images.c
        with self._engine.connect() as db:
            return db.scalar(select(c.location).where(c.target == self.target, c.image_id == image_id))
