"""The inbox: every accepted delivery, durably stored and de-duplicated, with what became of it.

``Inbox(state_dir)`` (:mod:`.sqlite`) keeps it in the state dir's SQLite database;
``PostgresInbox(url)`` (:mod:`.postgres`) in one PostgreSQL that several listeners share;
``select.open_inbox`` picks one. What both keep and hand out: :mod:`.records`.
"""

from __future__ import annotations

from .records import (
    EVENT_STATUSES,
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    RUN_STATUSES,
    Claimed,
    Decision,
    RunRecord,
    StoredEvent,
    event_id_for,
    run_id_for,
    utcnow,
)
from .sqlite import DB_NAME, SCHEMA_VERSION, Inbox
from .sqlite_put import PutResult

__all__ = [
    "DB_NAME", "EVENT_STATUSES", "LEASE_SECONDS", "MAX_ATTEMPTS", "RUN_STATUSES", "SCHEMA_VERSION", "Claimed",
    "Decision", "Inbox", "PutResult", "RunRecord", "StoredEvent", "event_id_for", "run_id_for", "utcnow",
]
