"""Which inbox a command opens: ``open_inbox(state_dir, database_url=None)``.

A PostgreSQL URL (``--database-url`` or ``$PIPELINE_PLUGIN_DATABASE_URL``) -> the shared inbox in
that database (:mod:`pipeline_plugin.inbox.postgres`), which any number of ``serve`` replicas use
at once; otherwise the SQLite inbox of the state dir (``<state dir>/inbox.sqlite3``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import MAX_ATTEMPTS


def shared_url(database_url: str | None = None) -> str | None:
    """The normalized PostgreSQL URL the inbox should use, or None for the state dir's SQLite."""
    from ..store.engine import DATABASE_URL_ENV, normalize_url

    if database_url:
        url = normalize_url(database_url, where="--database-url")
    elif os.environ.get(DATABASE_URL_ENV):
        url = normalize_url(os.environ[DATABASE_URL_ENV], where=f"${DATABASE_URL_ENV}")
    else:
        return None
    return url if url.startswith("postgresql") else None


def open_inbox(state_dir: str | Path, database_url: str | None = None, max_attempts: int = MAX_ATTEMPTS, **kw: Any):
    """The inbox of this command: PostgreSQL when the database URL is one, else SQLite in ``state_dir``."""
    url = shared_url(database_url)
    if url is not None:
        from .postgres import PostgresInbox

        return PostgresInbox(url, state_dir=state_dir, max_attempts=max_attempts)
    from . import Inbox

    return Inbox(state_dir, max_attempts=max_attempts, **kw)
