"""Which inbox a command opens: ``open_inbox(state_dir, database_url=None)``.

A PostgreSQL URL (``--database-url`` or ``$PIPELINE_PLUGIN_DATABASE_URL``) -> the shared inbox in
that database (:mod:`pipeline_plugin.inbox.postgres`), which any number of ``serve`` replicas use
at once; otherwise the SQLite inbox of the state dir (``<state dir>/inbox.sqlite3``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .records import MAX_ATTEMPTS


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
    from .sqlite import Inbox

    return Inbox(state_dir, max_attempts=max_attempts, **kw)


#: below this much free space on the state dir's disk the SQLite inbox cannot be counted on to store
MIN_FREE_BYTES = 256 << 10


def health(inbox: Any) -> dict[str, Any]:
    """What ``/healthz`` says of the inbox: ``{"backend", "ok", "error"?, "depth"?}``; ``ok`` is
    whether it can store a delivery now (the database answers; for SQLite, the disk has room)."""
    backend = getattr(inbox, "backend", "sqlite")
    out: dict[str, Any] = {"backend": backend, "ok": True}
    try:
        out["depth"] = inbox.depth()
    except Exception as exc:  # noqa: BLE001 - health says what is wrong
        return {"backend": backend, "ok": False, "error": f"the inbox does not answer: {getattr(exc, 'message', exc)}"}
    if backend == "postgresql":
        try:
            why = inbox.cannot_store()
        except Exception as exc:  # noqa: BLE001
            return {"backend": backend, "ok": False, "error": f"the inbox does not answer: {getattr(exc, 'message', exc)}"}
        if why:
            out.update(ok=False, error=why)
    elif backend == "sqlite":
        try:
            st = os.statvfs(inbox.state_dir)
        except OSError as exc:
            return {**out, "ok": False, "error": f"cannot stat the state dir {str(inbox.state_dir)!r}: {exc}"}
        free = st.f_bavail * st.f_frsize
        if free < MIN_FREE_BYTES:
            out.update(ok=False, error=f"the disk of the state dir {str(inbox.state_dir)!r} is full ({free} bytes free): "
                       "deliveries cannot be stored (503); free space there")
        elif not os.access(inbox.path, os.W_OK):
            out.update(ok=False, error=f"the inbox {str(inbox.path)!r} is read-only: deliveries cannot be stored")
    return out
