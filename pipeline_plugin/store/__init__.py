"""The one place pipeline-plugin's shared state lives: deployment history, approvals and the local
targets' records (the inbox may move here later: add its tables to ``schema.py`` and a migration).

SQLite is the embedded default (``<state dir>/history.sqlite``); PostgreSQL when
``$PIPELINE_PLUGIN_DATABASE_URL`` (or ``--database-url``) is a ``postgresql://`` URL, so that stages
run by different CI jobs, each with its own empty state dir, share one state.

    store = open_store()                       # the env's URL, else the state dir's SQLite file
    History(store=store).record(...)           # pipeline_plugin.store.history
    TargetRecords(store, "docker")             # pipeline_plugin.store.targets
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .engine import DATABASE_URL_ENV, database_url, engine_for, mask, named_lock, normalize_url, scope, use_database_url

__all__ = [
    "DATABASE_URL_ENV", "Store", "add_database_url_flag", "database_url", "mask", "normalize_url", "open_store",
    "use_database_url",
]


class Store:
    """An open database: ``engine`` (SQLAlchemy), ``url``, ``scope`` (a stable short name of the
    database, without secrets) and ``embedded`` (the default SQLite file of a state dir)."""

    def __init__(self, url: str, embedded: bool = False) -> None:
        self.url = url
        self.embedded = embedded
        self.engine = engine_for(url)
        self.scope = scope(url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def __repr__(self) -> str:
        return f"Store({mask(self.url)!r})"

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock shared by every process using this database (see ``engine.named_lock``)."""
        with named_lock(self.engine, name):
            yield


def open_store(state_dir: str | Path | None = None, url: str | None = None) -> Store:
    """The store: ``url``, else ``$PIPELINE_PLUGIN_DATABASE_URL``, else ``<state dir>/history.sqlite``."""
    embedded = not url and not os.environ.get(DATABASE_URL_ENV)
    return Store(database_url(state_dir, url), embedded=embedded)


def add_database_url_flag(parser, help: str | None = None) -> None:  # noqa: ANN001 - an argparse parser
    parser.add_argument(
        "--database-url",
        help=help or f"the shared store (default ${DATABASE_URL_ENV}, else <state dir>/history.sqlite): "
        "postgresql://USER:PASSWORD@HOST:PORT/DB lets jobs on different runners share deployments, "
        "history and approvals (and `serve` replicas one inbox)",
    )
