"""Named leases on the SQLite inbox: "one poller per source", and other singletons.

A lease is a row ``(name, owner, until, status)``: :meth:`try_lease` takes it when it is free or
expired, renews it when ``owner`` holds it already, and answers whether ``owner`` holds it now.
Only expiry frees a lease that its holder did not release (a holder on another host cannot be
asked whether it still runs). The PostgreSQL inbox has the same three methods
(:mod:`pipeline_plugin.inbox.postgres`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

LEASES_TABLE = """
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until REAL NOT NULL,
    status_json TEXT NOT NULL DEFAULT '{}',
    updated_at REAL NOT NULL
)
"""


def check_lease_args(name: str, owner: str, seconds: float | None = None) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a lease needs a name (got {name!r})")
    if not isinstance(owner, str) or not owner:
        raise ValueError(f"lease {name!r} needs an owner (got {owner!r})")
    if seconds is not None and not seconds > 0:
        raise ValueError(f"lease {name!r}: seconds must be more than 0 (got {seconds!r})")


def lease_row(name: str, owner: str, until: float, status_json: str | None) -> dict[str, Any]:
    return {"name": name, "owner": owner, "until": until, "status": json.loads(status_json or "{}")}


class SqliteLeases:
    """Mixed into :class:`pipeline_plugin.inbox.Inbox` (uses its ``_write`` and ``_db``)."""

    def try_lease(self, name: str, owner: str, seconds: float, status: dict | None = None) -> bool:
        """Acquire or renew lease ``name`` for ``seconds``; True when ``owner`` holds it now.
        ``status`` (JSON) is stored with it when ``owner`` holds it (see :meth:`leases`)."""
        check_lease_args(name, owner, seconds)
        status_json = json.dumps(status or {}, sort_keys=True, default=str)

        def _job(db: sqlite3.Connection) -> bool:
            db.execute(LEASES_TABLE)
            now = time.time()
            cur = db.execute(
                "INSERT INTO leases(name, owner, until, status_json, updated_at) VALUES (?,?,?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET owner=excluded.owner, until=excluded.until,"
                " status_json=excluded.status_json, updated_at=excluded.updated_at"
                " WHERE leases.owner=excluded.owner OR leases.until<?",
                (name, owner, now + seconds, status_json, now, now),
            )
            return cur.rowcount == 1

        return self._write(_job)  # type: ignore[attr-defined]

    def release_lease(self, name: str, owner: str) -> None:
        """Give lease ``name`` up if ``owner`` holds it (anyone may take it at once)."""
        check_lease_args(name, owner)

        def _job(db: sqlite3.Connection) -> None:
            db.execute(LEASES_TABLE)
            db.execute("DELETE FROM leases WHERE name=? AND owner=?", (name, owner))

        self._write(_job)  # type: ignore[attr-defined]

    def leases(self) -> list[dict[str, Any]]:
        """Every lease held now (expired ones left out): name, owner, until (epoch seconds), status."""
        db: sqlite3.Connection = self._db()  # type: ignore[attr-defined]
        try:
            rows = db.execute(
                "SELECT name, owner, until, status_json FROM leases WHERE until>=? ORDER BY name", (time.time(),)
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [lease_row(r[0], r[1], r[2], r[3]) for r in rows]


@contextmanager
def keep_claimed(inbox: Any, event_id: str, owner: str, seconds: float | None = None) -> Iterator[None]:
    """Renew ``owner``'s claim on ``event_id`` every third of its lease while the body runs (a
    dispatch that lasts longer than the lease), so that no other replica takes the event over and
    starts its run again. Renewal errors are logged, not raised: the body's own result counts."""
    from .records import LEASE_SECONDS

    seconds = seconds or getattr(inbox, "lease", LEASE_SECONDS)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(seconds / 3):
            try:
                inbox.renew(event_id, owner, lease=seconds)
            except Exception as exc:  # noqa: BLE001 - the next beat tries again
                log.warning("could not renew the lease on event %s: %s", event_id, exc)

    thread = threading.Thread(target=beat, name=f"lease-{event_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
