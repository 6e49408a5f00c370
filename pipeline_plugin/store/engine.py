"""Which database the store uses, opening it, and keeping its schema current.

The URL comes from ``--database-url`` or ``$PIPELINE_PLUGIN_DATABASE_URL``; without one the store is
the SQLite file ``<state dir>/history.sqlite``. ``postgresql://`` and ``postgres://`` URLs use psycopg 3
(``postgresql+psycopg``). Opening a database runs the Alembic migrations shipped in ``migrations/``
(once per process and URL); a database whose schema is newer than this code is refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .. import settings
from ..errors import ConfigError, ServiceError

DATABASE_URL_ENV = "PIPELINE_PLUGIN_DATABASE_URL"
SQLITE_FILE = "history.sqlite"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_WHERE = f"--database-url / ${DATABASE_URL_ENV}"
_FIX = (
    "use postgresql://USER:PASSWORD@HOST:PORT/DATABASE (PostgreSQL, shared by every runner) or "
    "sqlite:////absolute/path/store.sqlite, or leave it unset for <state dir>/history.sqlite"
)

_engines: dict[str, object] = {}
_lock = threading.Lock()


def mask(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"([^/@:\s]*:)[^/@\s]*@", r"\1***@", str(url))


def normalize_url(url: str, where: str = _WHERE) -> str:
    """The SQLAlchemy URL for ``url``: postgres(ql):// -> postgresql+psycopg://; sqlite:/// as is.
    Anything else is a ConfigError naming ``where``, the (masked) value and the fix."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    raw = (url or "").strip()
    try:
        parsed = make_url(raw)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"{where} {mask(raw)!r} is not a database URL ({mask(str(exc))}); {_FIX}") from None
    name = parsed.drivername
    if name in ("postgres", "postgresql", "postgresql+psycopg"):
        if not parsed.database:
            raise ConfigError(f"{where} {mask(raw)!r} names no database; add it: postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif name in ("sqlite", "sqlite+pysqlite"):
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError(f"{where} {mask(raw)!r} names no SQLite file; {_FIX}")
    else:
        raise ConfigError(f"{where} {mask(raw)!r} uses {name!r}, which pipeline-plugin does not support; {_FIX}")
    return parsed.render_as_string(hide_password=False)


def use_database_url(url: str | None) -> None:
    """Make ``--database-url`` the store of everything this command touches (checked now)."""
    if url:
        os.environ[DATABASE_URL_ENV] = normalize_url(url, where="--database-url")


def database_url(state_dir: str | Path | None = None, url: str | None = None) -> str:
    """The store's URL: ``url``, else ``$PIPELINE_PLUGIN_DATABASE_URL``, else the state dir's SQLite file."""
    if url:
        return normalize_url(url, where="--database-url")
    if os.environ.get(DATABASE_URL_ENV):
        return normalize_url(os.environ[DATABASE_URL_ENV], where=f"${DATABASE_URL_ENV}")
    directory = Path(state_dir) if state_dir else settings.default_state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(directory / SQLITE_FILE).resolve()}"


def scope(url: str) -> str:
    """A short name of the database (without its password): the same for every process that uses it."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    ident = f"{u.get_backend_name()}://{u.username or ''}@{u.host or ''}:{u.port or ''}/{u.database}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def sqlite_path(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return Path(u.database) if u.get_backend_name() == "sqlite" else None


def engine_for(url: str):
    """The (cached) engine of ``url``, its schema migrated to this code's head."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create(url)
            migrate(engine)
            _engines[url] = engine
        return engine


def _create(url: str):
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # no pool: a connection per use is cheap on SQLite, and a process that opens many state dirs
        # (the test suite, the demo) keeps no files open
        engine = create_engine(url, connect_args={"timeout": 30}, poolclass=NullPool)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{_WHERE} is a PostgreSQL URL but psycopg 3 is not installed; install it with "
            "`pip install 'pipeline-plugin[postgres]'` (or `pip install 'psycopg[binary]>=3.1'`)"
        ) from None
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_key(name: str) -> int:
    """A signed 64-bit key for PostgreSQL advisory locks."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _alembic_config(connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine) -> None:
    """Upgrade the schema to head; refuse (ConfigError) a revision this code does not know."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    url = engine.url.render_as_string(hide_password=False)
    path = sqlite_path(url)
    guard = _file_lock(path.with_name(path.name + ".migrate-lock")) if path is not None else _nullcontext()
    try:
        with guard, engine.begin() as conn:
            if path is None:  # one migrating process at a time; the others wait, then see head
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key("pipeline-plugin:migrate")})
            cfg = _alembic_config(conn)
            script = ScriptDirectory.from_config(cfg)
            known = {rev.revision for rev in script.walk_revisions()}
            current = MigrationContext.configure(conn).get_current_heads()
            unknown = [rev for rev in current if rev not in known]
            if unknown:
                raise ConfigError(
                    f"the database {mask(url)} has schema revision {', '.join(unknown)}, newer than this pipeline-plugin "
                    f"knows (its newest is {script.get_current_head()}); upgrade pipeline-plugin "
                    "(`pip install -U pipeline-plugin`, or the same version the other jobs use)"
                )
            if set(current) != set(script.get_heads()):
                command.upgrade(cfg, "head")
    except OperationalError as exc:
        raise ServiceError(
            f"cannot open the database {mask(url)} ({_WHERE}): {mask(str(exc.orig or exc)).strip()}; "
            "check that it runs and that the URL, user and password are right"
        ) from None


@contextmanager
def _nullcontext() -> Iterator[None]:
    yield


@contextmanager
def named_lock(engine, name: str) -> Iterator[None]:
    """Hold an exclusive lock called ``name`` across processes sharing the database: a PostgreSQL
    session advisory lock, or a file lock next to the SQLite file. Not re-entrant."""
    from sqlalchemy import text

    url = engine.url.render_as_string(hide_password=False)
    path = sqlite_path(url)
    if path is not None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        with _file_lock(path.with_name(path.name + ".locks") / safe):
            yield
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(name)})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(name)})
