"""Deployment history (kept for its importers): the implementation lives in the store,
:mod:`pipeline_plugin.store.history`, over SQLite or PostgreSQL."""

from .store.history import (  # noqa: F401
    ACTIONS,
    SERVING_ACTIONS,
    Approval,
    History,
    Record,
    current_actor,
    elapsed_since,
    now_iso,
    use_state_dir,
)
