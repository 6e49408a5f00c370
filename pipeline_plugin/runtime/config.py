"""The scoring runtime's settings, read from the environment (Azure ML's names where Azure has one)
and overridable by command-line flags. Standard library only."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 5001
DEFAULT_APP_ROOT = "/var/azureml-app"
DEFAULT_TIMEOUT_MS = 60_000
DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024
#: N >= 1 (default 1): run() goes to a pool of N threads, so health, readiness and metrics answer
#: while it works (N > 1 lets run() calls overlap: only for thread-safe scripts); 0: run() is called
#: on the worker's event loop (about 6% more req/s in bench/score, SIGALRM bounds it, as Azure does),
#: but a busy worker then answers no probe either: container and Kubernetes health checks time out
#: under load and restart healthy replicas
DEFAULT_THREADS = 1

# environment variable names (docs/ARCHITECTURE.md, runtime section)
ENTRY_SCRIPT = "AZUREML_ENTRY_SCRIPT"
SOURCE_DIRECTORY = "AZUREML_SOURCE_DIRECTORY"
MODEL_DIR = "AZUREML_MODEL_DIR"
APP_ROOT = "AML_APP_ROOT"
WORKER_COUNT = "WORKER_COUNT"
SCORING_TIMEOUT_MS = "SCORING_TIMEOUT_MS"
CORS_ORIGINS = "AML_CORS_ORIGINS"
SCORING_KEYS = "PIPELINE_PLUGIN_SCORING_KEYS"
SCORING_KEYS_FILE = "PIPELINE_PLUGIN_SCORING_KEYS_FILE"
MAX_BODY_BYTES = "PIPELINE_PLUGIN_MAX_BODY_BYTES"
SCORING_THREADS = "PIPELINE_PLUGIN_SCORING_THREADS"
SHUTDOWN_TIMEOUT_MS = "PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS"
#: after SIGTERM, requests still open this long past SCORING_TIMEOUT_MS are cut and the process exits
SHUTDOWN_MARGIN_MS = 5_000
PORT = "PORT"
HOST = "PIPELINE_PLUGIN_HOST"
SERVICE_NAME = "SERVICE_NAME"
SERVICE_VERSION = "SERVICE_VERSION"
SERVICE_PATH_PREFIX = "SERVICE_PATH_PREFIX"


class RuntimeConfigError(ValueError):
    """A setting has a value the runtime cannot use; the message names it, the value and the fix."""


@dataclass(frozen=True)
class RuntimeConfig:
    entry_script: Path
    app_root: Path
    source_dir: Path | None = None
    model_dir: str | None = None
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    workers: int = 1
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    cors_origins: tuple[str, ...] = ()
    keys: tuple[str, ...] = field(default=(), repr=False)
    #: the keys that come from the environment variable (the file's are re-read when it changes)
    env_keys: tuple[str, ...] = field(default=(), repr=False)
    keys_file: Path | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    threads: int = DEFAULT_THREADS
    #: how long SIGTERM waits for open requests (a client still sending its body, a run() still
    #: working) before closing them and exiting; default SCORING_TIMEOUT_MS + 5 s
    shutdown_timeout_ms: int = DEFAULT_TIMEOUT_MS + SHUTDOWN_MARGIN_MS
    service_name: str = "ML service"
    service_version: str = "1.0"
    service_path_prefix: str = ""


def _int(env: dict, name: str, default: int, minimum: int, maximum: int | None = None,
         flag: int | None = None) -> int:
    if flag is not None:
        raw: object = flag
    else:
        raw = env.get(name, "").strip()
        if raw == "":
            return default
    try:
        value = int(raw)  # type: ignore[arg-type]
    except ValueError:
        raise RuntimeConfigError(f"{name}={raw!r} is not a whole number; set it to an integer >= {minimum}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise RuntimeConfigError(f"{name}={value} is out of range; set it {bound}")
    return value


def read_key_file(path: Path) -> tuple[str, ...]:
    """The keys in a mounted key file (one per line, or comma separated); OSError if unreadable."""
    text = path.read_text(encoding="utf-8")
    return tuple(k.strip() for line in text.splitlines() for k in line.split(",") if k.strip())


def read_keys(env: dict) -> tuple[str, ...]:
    """Scoring keys from PIPELINE_PLUGIN_SCORING_KEYS (comma separated) and/or the file named by
    PIPELINE_PLUGIN_SCORING_KEYS_FILE (keys separated by newlines or commas)."""
    keys = [k.strip() for k in env.get(SCORING_KEYS, "").split(",")]
    path = env.get(SCORING_KEYS_FILE, "").strip()
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise RuntimeConfigError(
                f"{SCORING_KEYS_FILE}={path!r} cannot be read ({exc.strerror}); mount the key file there "
                f"or unset {SCORING_KEYS_FILE}") from None
        keys += [k.strip() for line in text.splitlines() for k in line.split(",")]
        if not any(keys):
            raise RuntimeConfigError(
                f"{SCORING_KEYS_FILE}={path!r} holds no key; write one key per line or unset {SCORING_KEYS_FILE}")
    return tuple(dict.fromkeys(k for k in keys if k))


def resolve_entry_script(entry: str, app_root: Path, source_dir: Path | None) -> Path:
    """Find the entry script: absolute as given; else under the source folder, the app root
    (as Azure ML resolves it) or the working directory, first match wins."""
    path = Path(entry)
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [base / path for base in (source_dir, app_root, Path.cwd()) if base is not None]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise RuntimeConfigError(
        f"{ENTRY_SCRIPT}={entry!r}: no such file (looked at {tried}); pass --entry-script PATH or set "
        f"{ENTRY_SCRIPT} (relative to {SOURCE_DIRECTORY} or {APP_ROOT})")


def load(env: dict | None = None, *, entry_script: str | None = None, port: int | None = None,
         workers: int | None = None, host: str | None = None) -> RuntimeConfig:
    env = dict(os.environ if env is None else env)
    if env.get(APP_ROOT):
        app_root = Path(env[APP_ROOT])
    elif Path(DEFAULT_APP_ROOT).is_dir():
        app_root = Path(DEFAULT_APP_ROOT)
    else:
        app_root = Path.cwd()
    source_dir = None
    if env.get(SOURCE_DIRECTORY):
        source_dir = app_root / env[SOURCE_DIRECTORY]  # an absolute value replaces app_root
        if not source_dir.is_dir():
            raise RuntimeConfigError(
                f"{SOURCE_DIRECTORY}={env[SOURCE_DIRECTORY]!r} is not a folder (resolved to {source_dir}); "
                f"point it at the folder holding your scoring code")
    entry = entry_script or env.get(ENTRY_SCRIPT, "").strip()
    if not entry:
        raise RuntimeConfigError(
            f"no entry script: set {ENTRY_SCRIPT} (for example score.py) or pass --entry-script PATH")
    script = resolve_entry_script(entry, app_root, source_dir)

    timeout_ms = _int(env, SCORING_TIMEOUT_MS, DEFAULT_TIMEOUT_MS, 1)
    origins = tuple(o.strip() for o in env.get(CORS_ORIGINS, "").split(",") if o.strip())
    prefix = env.get(SERVICE_PATH_PREFIX, "")
    return RuntimeConfig(
        entry_script=script,
        app_root=app_root.resolve(),
        source_dir=source_dir.resolve() if source_dir else None,
        model_dir=env.get(MODEL_DIR) or None,
        host=host or env.get(HOST) or "0.0.0.0",
        port=_int(env, PORT, DEFAULT_PORT, 1, 65535, flag=port),
        workers=_int(env, WORKER_COUNT, 1, 1, 64, flag=workers),
        timeout_ms=timeout_ms,
        shutdown_timeout_ms=_int(env, SHUTDOWN_TIMEOUT_MS, timeout_ms + SHUTDOWN_MARGIN_MS, 0),
        cors_origins=origins,
        keys=read_keys(env),
        env_keys=read_keys({SCORING_KEYS: env.get(SCORING_KEYS, "")}),
        keys_file=Path(env[SCORING_KEYS_FILE].strip()) if env.get(SCORING_KEYS_FILE, "").strip() else None,
        max_body_bytes=_int(env, MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES, 1),
        threads=_int(env, SCORING_THREADS, DEFAULT_THREADS, 0, 256),
        service_name=env.get(SERVICE_NAME) or "ML service",
        service_version=env.get(SERVICE_VERSION) or "1.0",
        service_path_prefix=f"/{prefix.strip('/')}" if prefix else "",
    )
