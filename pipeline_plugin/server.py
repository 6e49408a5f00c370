"""The webhook listener: ``POST /webhooks/<source>`` -> verify -> parse -> durable inbox -> 2xx.

Routes:

- ``POST /webhooks/<source>``: the source's handshake (e.g. Event Grid validation) if it is one;
  else authenticate (401 and nothing stored on failure), parse, store durably, answer 200 with
  ``{"stored": [ids], "duplicate": bool}``. Bad input is a 400 whose JSON body names the field; a
  body over 1 MiB is 413 (``Content-Length`` and the streamed size are both checked); an unknown
  source is 404 listing the valid ones; an inbox that cannot store is 503 (the sender retries).
  Bad input never gives a 500.
- ``OPTIONS /webhooks/<source>``: the CloudEvents abuse-protection handshake.
- ``GET /healthz``: 200 ``{"status": "ok", "inbox": {"backend", "ok"}, ...}`` while the inbox answers
  and can store; 503 ``{"status": "degraded", "inbox": {..., "error"}}`` when it cannot (database down, disk full).
- ``GET /metrics``: Prometheus text (see ``metrics``).

Secrets: source S uses ``$PIPELINE_PLUGIN_<S>_SECRET``, or the variable named by ``secret_env`` in
the config file. A source without a secret refuses every delivery (401) unless the server runs with
``insecure_no_auth``. Secrets are read once at start and never logged.

Config file (YAML, ``--config``)::

    sources:
      mlflow:
        secret_env: MLFLOW_WEBHOOK_SECRET     # read the secret from this variable instead
        auth: standard-webhooks               # another scheme from sources.auth.SCHEMES
        tracking_uri: http://mlflow:5000      # registry identity for events of this source
        tracking_uris: [http://a:5000]        # servers a webhook URL's ?tracking_uri= may name
    poll:                                     # registries polled by serve itself (see pipeline_plugin.poll)
      mlflow: {models: all, interval: 60}     # tracking_uri defaults to sources.mlflow.tracking_uri
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import __version__, sources
from .errors import (
    AuthenticationError,
    ConfigError,
    PayloadError,
    PayloadTooLarge,
    PipelinePluginError,
    suggest,
)
from .inbox import Inbox
from .inbox.loop_writer import LoopWriter
from .inbox.select import health as inbox_health
from .inbox.select import open_inbox
from .metrics import CONTENT_TYPE, Metrics
from .webhook_asgi import MAX_BODY, JSONAnswer, WebhookEndpoint  # noqa: F401 - MAX_BODY: the limit, for callers

log = logging.getLogger("pipeline_plugin.server")

SOURCE_CONFIG_KEYS = ("secret_env", "auth", "tracking_uri", "tracking_uris", "options")
CONFIG_KEYS = ("sources", "fetch", "poll")
FETCH_CONFIG_KEYS = ("allowed_roots",)


# ---- configuration --------------------------------------------------------------------------
@dataclass
class SourceConfig:
    secret_env: str | None = None
    auth: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # handed to the source (tracking_uri ...)


@dataclass
class ServerConfig:
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    path: str | None = None
    #: ``fetch: allowed_roots:``: folders below which local model paths named by events may be read
    fetch_roots: tuple[str, ...] = ()
    #: ``poll:``: registries ``serve`` polls itself (``poll.PollSettings`` per source)
    poll: dict[str, Any] = field(default_factory=dict)


def load_config(path: str | Path | None) -> ServerConfig:
    """Read the server config file; ``ConfigError`` naming the file, key and fix on any mistake."""
    if path is None:
        return ServerConfig()
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} does not exist; check --config") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the config must be a mapping with a 'sources:' key")
    for key in data:
        if key not in CONFIG_KEYS:
            raise ConfigError(f"{p}: unknown key {key!r}.{suggest(str(key), CONFIG_KEYS)}")
    raw_sources = data.get("sources") or {}
    if not isinstance(raw_sources, dict):
        raise ConfigError(f"{p}: 'sources' must map source names to settings, got {type(raw_sources).__name__}")
    config = ServerConfig(path=str(p))
    from .sources.auth import SCHEMES

    for name, settings in raw_sources.items():
        where = f"{p}: sources.{name}"
        if name not in sources.BACKENDS:
            raise ConfigError(f"{where}: unknown source {name!r}.{suggest(str(name), sources.BACKENDS)}")
        settings = settings or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{where}: must be a mapping of {', '.join(SOURCE_CONFIG_KEYS)}")
        for key in settings:
            if key not in SOURCE_CONFIG_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r}.{suggest(str(key), SOURCE_CONFIG_KEYS)}")
        secret_env = settings.get("secret_env")
        if secret_env is not None and (not isinstance(secret_env, str) or not secret_env):
            raise ConfigError(f"{where}.secret_env: must be the name of an environment variable, got {secret_env!r}")
        auth = settings.get("auth")
        if auth is not None and auth not in SCHEMES:
            raise ConfigError(f"{where}.auth: unknown scheme {auth!r}.{suggest(str(auth), list(SCHEMES))}")
        options = dict(settings.get("options") or {})
        if settings.get("tracking_uri"):
            options["tracking_uri"] = str(settings["tracking_uri"])
        uris = settings.get("tracking_uris")
        if uris is not None:
            if not isinstance(uris, list) or not all(isinstance(u, str) and u for u in uris):
                raise ConfigError(f"{where}.tracking_uris: must be a list of MLflow server URLs (the values a "
                                  f"webhook URL's ?tracking_uri= may name), got {uris!r}")
            options["tracking_uris"] = list(uris)
        config.sources[name] = SourceConfig(secret_env=secret_env, auth=auth, options=options)
    config.fetch_roots = _fetch_roots(p, data.get("fetch"))
    from .poll import config_section

    config.poll = config_section(data.get("poll"), f"{p}: poll", config.sources)
    return config


def _fetch_roots(p: Path, section: Any) -> tuple[str, ...]:
    """``fetch: {allowed_roots: [folder, ...]}``: absolute, or relative to the config file."""
    if section is None:
        return ()
    if not isinstance(section, dict):
        raise ConfigError(f"{p}: fetch must be a mapping, e.g. fetch: {{allowed_roots: [/srv/models]}}")
    for key in section:
        if key not in FETCH_CONFIG_KEYS:
            raise ConfigError(f"{p}: fetch: unknown key {key!r}.{suggest(str(key), FETCH_CONFIG_KEYS)}")
    roots = section.get("allowed_roots") or []
    if not isinstance(roots, list) or not all(isinstance(r, str) and r for r in roots):
        raise ConfigError(f"{p}: fetch.allowed_roots must be a list of folders, got {roots!r}; "
                          "e.g. allowed_roots: [/srv/models]")
    out = []
    for root in roots:
        path = Path(root).expanduser()
        path = path if path.is_absolute() else p.parent / path
        if not path.is_dir():
            raise ConfigError(f"{p}: fetch.allowed_roots: {root!r} is not a folder (resolved to {path}); "
                              "list existing folders that hold model files")
        out.append(str(path.resolve()))
    return tuple(out)


def _json_error(exc: PipelinePluginError, status: int | None = None) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=status or exc.http_status)


def _to_http(resp: "sources.Response") -> Response:
    if isinstance(resp.body, (bytes, bytearray)):
        return Response(bytes(resp.body), status_code=resp.status, headers=resp.headers)
    if resp.body is None:
        return Response(b"", status_code=resp.status, headers=resp.headers)
    return JSONResponse(resp.body, status_code=resp.status, headers=resp.headers)


_REQUEST_FIELDS = {f.name for f in dataclasses.fields(sources.Request)}


class Listener:
    """State of one running listener: inbox, sources with their secrets, metrics, worker."""

    def __init__(
        self,
        state_dir: str | Path,
        rules: Sequence[Any] = (),
        rules_dir: str | Path | None = None,
        insecure_no_auth: bool = False,
        config: ServerConfig | None = None,
        environ: Mapping[str, str] | None = None,
        start_worker: bool = True,
        workers: int = 1,
        worker_process: bool = False,
        worker_nice: int = 0,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"--workers {workers}: give 1 or more worker threads")
        if not 0 <= worker_nice <= 19:
            raise ConfigError(f"--worker-nice {worker_nice}: give a niceness from 0 (the listener's priority) to 19 "
                              "(the lowest); default 10")
        self.worker_nice = worker_nice
        self.workers_wanted = workers
        self.state_dir = state_dir
        self.inbox = open_inbox(state_dir)  # PostgreSQL (shared by replicas) for a postgresql:// URL
        self.metrics = Metrics(self.inbox, writer=lambda: self._writer)
        self.config = config or ServerConfig()
        self.insecure = insecure_no_auth
        self.rules = list(rules)
        self.rules_dir = rules_dir
        self.start_worker = start_worker
        #: the worker threads in a child process (``worker_process``: what ``serve`` runs), so that
        #: matching and dispatching never hold the interpreter lock the acknowledgements need; rules
        #: given without their folder stay in this process (the child loads them from the folder)
        self.worker_process = worker_process and (rules_dir is not None or not self.rules)
        self._process: Any = None  # worker_process.WorkerProcess while it runs
        env = os.environ if environ is None else environ
        self.sources: dict[str, Any] = {}
        self.secrets: dict[str, str | None] = {}
        for name in sources.BACKENDS:
            try:
                self.sources[name] = sources.get_source(name)
            except ImportError as exc:
                log.warning("webhook source %s is not available: %s", name, exc)
                continue
            conf = self.config.sources.get(name, SourceConfig())
            var = conf.secret_env or sources.secret_env_var(name)
            self.secrets[name] = env.get(var) or None
        unauthenticated = [n for n in self.sources if not self.secrets.get(n)]
        if insecure_no_auth and unauthenticated:
            log.warning(
                "!!! INSECURE: --insecure-no-auth is set and these sources have no secret, so ANYONE who can "
                "reach this port can inject events and start pipelines: %s. Set %s to secure them. !!!",
                ", ".join(unauthenticated),
                ", ".join(self._secret_var(n) for n in unauthenticated),
            )
        elif insecure_no_auth:
            log.warning("!!! INSECURE flag --insecure-no-auth is set (every source has a secret, so it changes nothing) !!!")
        elif unauthenticated:
            log.info(
                "sources without a secret refuse deliveries (401): %s (set %s)",
                ", ".join(unauthenticated),
                ", ".join(self._secret_var(n) for n in unauthenticated),
            )
        self.workers: list[Any] = []
        self._writer: Any = None  # inbox.loop_writer.LoopWriter, made by the first delivery
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _secret_var(self, name: str) -> str:
        conf = self.config.sources.get(name)
        return (conf.secret_env if conf and conf.secret_env else None) or sources.secret_env_var(name)

    # ---- worker lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        pollers: list[threading.Thread] = []
        if self.config.poll:  # one thread per polled registry, under the inbox lease poll:<source>
            from .poll.service import start_pollers

            self._stop.clear()
            pollers = start_pollers(self.inbox, self.config.poll, self._stop)
        if not self.start_worker:
            self._threads = pollers
            return
        if self.worker_process:
            from .worker_process import WorkerProcess

            level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
            self._process = WorkerProcess(self.state_dir, self.rules_dir, self.workers_wanted, self.config.fetch_roots,
                                          level if level in ("debug", "info", "warning", "error") else "info",
                                          getattr(self, "shutdown_timeout", 30.0), self.worker_nice)
            self._process.start()
            self._threads = pollers
            return
        from .worker import start_workers

        self._stop.clear()
        self.workers, self._threads = start_workers(self.state_dir, self.rules, self.rules_dir, self.workers_wanted,
                                                    self.config.fetch_roots, self._stop)
        self._threads += pollers

    def wake_workers(self) -> None:
        for w in self.workers:
            w.wake.set()
        if self._process is not None:
            self._process.wake()

    def worker_down(self) -> str | None:
        """Why the worker does not run (for ``/healthz``), or None while it runs (or was not asked for)."""
        if self._process is not None:
            if self._process.alive():
                return None
            return (f"the worker process exited with status {self._process.exit_status()}; serve starts it again "
                    "(deliveries are still stored)")
        if self.start_worker and self._threads and not all(t.is_alive() for t in self._threads):
            return "the worker thread stopped; restart serve"
        return None

    def stop(self) -> None:
        self._stop.set()
        self.wake_workers()
        if self._process is not None:  # bounded: SIGTERM, then SIGKILL after the shutdown timeout
            self._process.stop()
            self._process = None
        if self._writer is not None:  # first: a worker may wait for a job queued on this loop
            self._writer.close()
        # bounded: a pipeline still running is left to its daemon thread (its event stays claimed in
        # the inbox and is taken up again after the lease) so that the process can exit
        deadline = time.monotonic() + getattr(self, "shutdown_timeout", 30.0)
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        if self._threads:
            log.info("worker stopped (%d thread(s))", len(self._threads))
        self._threads = []

    # ---- one delivery (runs in a worker thread: it blocks on fsync) ---------------------------
    def _request(self, name: str, method: str, path: str, headers: Mapping[str, str], body: bytes, query: Mapping[str, str]):
        kwargs: dict[str, Any] = dict(
            method=method, path=path, headers=sources.Headers(headers), body=body, query=dict(query), now=time.time()
        )
        if "options" in _REQUEST_FIELDS:
            conf = self.config.sources.get(name)
            kwargs["options"] = dict(conf.options) if conf else {}
        return sources.Request(**kwargs)

    def _verify(self, name: str, req: "sources.Request", remote: str | None) -> tuple[Response, str] | list[Any]:
        """Authenticate and parse (CPU only, no I/O): the events to store, or the answer and its
        outcome label when there is nothing to store."""
        source = self.sources[name]
        try:
            secret = self.secrets.get(name)
            if not secret and not self.insecure and req.method.upper() != "OPTIONS":
                raise AuthenticationError(
                    f"no secret is configured for source {name!r}, so its deliveries cannot be verified; "
                    f"set {self._secret_var(name)} on the listener (or start it with --insecure-no-auth for a test)"
                )
            conf = self.config.sources.get(name)
            answer = sources.receive(source, req, secret, scheme=conf.auth if conf else None)
            if isinstance(answer, sources.Response):
                return _to_http(answer), "handshake"
            return list(answer)
        except AuthenticationError as exc:
            log.warning("delivery to /webhooks/%s from %s refused: %s", name, remote, exc.message)
            return _json_error(exc, 401), "unauthorized"
        except PayloadTooLarge as exc:
            return _json_error(exc, 413), "too_large"
        except PayloadError as exc:
            log.info("delivery to /webhooks/%s rejected (field %s): %s", name, exc.field, exc.message)
            return _json_error(exc, 400), "bad_request"
        except PipelinePluginError as exc:
            log.info("delivery to /webhooks/%s rejected: %s", name, exc.message)
            return _json_error(exc, 400), "bad_request"
        except Exception as exc:  # noqa: BLE001
            # a source that met input it did not expect: the input is still the sender's, so a 400
            # (never a 500 that makes the sender retry the same body forever); the traceback is
            # logged so that the parser can be fixed
            log.exception("delivery to /webhooks/%s could not be parsed: %s: %s", name, type(exc).__name__, exc)
            err = PayloadError(f"malformed {name} delivery: {type(exc).__name__}: {exc}", field="(body)")
            return _json_error(err, 400), "bad_request"

    async def handle_async(self, name: str, req: "sources.Request", remote: str | None) -> tuple[Any, str]:
        """Verify and parse on the event loop, then await the inbox's group commit (no thread waits
        for the fsync, and concurrent deliveries share one); the HTTP response and the outcome
        label for metrics."""
        checked = self._verify(name, req, remote)
        if isinstance(checked, tuple):
            return checked
        events = checked
        if not events:
            return JSONResponse({"stored": [], "duplicate": False, "detail": "no model version in this delivery"}), "no_event"
        try:
            writer = self._loop_writer()
            if writer is not None:  # SQLite: stored on this loop, only the fsync on another thread
                ids = await writer.put(name, events, self._meta(req, remote))
            else:
                future = self.inbox.submit_put(name, events, self._meta(req, remote))
                ids = await asyncio.wrap_future(future)
        except Exception as exc:  # noqa: BLE001 - nothing was committed: the sender must send it again
            return self._not_stored(name, exc)
        return self._stored(name, events, ids)

    def _loop_writer(self) -> Any:
        """The SQLite inbox's writer for the running loop (the first loop that asks gets it; a
        second loop while the first still runs uses the inbox's writer thread); None for PostgreSQL."""
        if not isinstance(self.inbox, Inbox):
            return None
        loop = asyncio.get_running_loop()
        writer = self._writer
        if writer is not None and writer.loop is not loop and writer.loop.is_closed():
            writer.close()  # a test client's earlier loop: this one gets its own
            writer = None
        if writer is None:
            writer = self._writer = LoopWriter(self.inbox, loop)
        return writer if writer.loop is loop and not writer.closed else None

    @staticmethod
    def _meta(req: "sources.Request", remote: str | None) -> dict[str, Any]:
        return {"remote": remote, "user_agent": req.headers.get("user-agent")}

    @staticmethod
    def _not_stored(name: str, exc: Exception) -> tuple[Response, str]:
        if isinstance(exc, PipelinePluginError):
            log.error("could not store delivery to /webhooks/%s: %s", name, exc.message)
            return JSONResponse({**exc.to_dict(), "retry": True}, status_code=503), "error"
        log.error("could not store delivery to /webhooks/%s: %s: %s", name, type(exc).__name__, exc, exc_info=exc)
        return JSONResponse({"error": "StoreError", "message": f"the delivery could not be stored "
                             f"({type(exc).__name__}); nothing was kept, send it again", "retry": True},
                            status_code=503), "error"

    def _stored(self, name: str, events: list[Any], ids: Any) -> tuple[Response, str]:
        self.wake_workers()
        if log.isEnabledFor(logging.INFO):
            log.info(
                "delivery to /webhooks/%s %s: %s",
                name,
                "duplicate" if ids.duplicate else "stored",
                ", ".join(f"{e.kind} {e.model} v{e.version}" for e in events),
            )
        return JSONAnswer({"stored": list(ids), "duplicate": ids.duplicate}), (
            "duplicate" if ids.duplicate else "accepted"
        )


def create_app(listener: Listener) -> _WebhookFastPath:
    valid = sorted(listener.sources)

    webhook = WebhookEndpoint(listener)

    async def healthz(request: HTTPRequest) -> Response:
        inbox = await run_in_threadpool(inbox_health, listener.inbox)
        if not inbox["ok"]:  # the database does not answer, or the disk is full: deliveries get 503
            return JSONResponse({"status": "degraded", "detail": f"inbox: {inbox['error']}", "inbox": inbox},
                                status_code=503)
        depth = inbox.get("depth", 0)
        down = listener.worker_down()
        if down is not None:
            return JSONResponse({"status": "error", "detail": down, "worker": False}, status_code=503)
        worker_alive = True if listener.start_worker and (listener._process or listener.workers) else None
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "inbox_depth": depth,
                "inbox": inbox,
                "worker": worker_alive,
                "rules": len(listener.rules),
                "sources": valid,
            }
        )

    async def metrics(request: HTTPRequest) -> Response:
        data = await run_in_threadpool(listener.metrics.render)
        return Response(data, media_type=CONTENT_TYPE)

    async def not_found(request: HTTPRequest, exc: Exception) -> Response:
        return JSONResponse(
            {"error": "NotFoundError", "message": f"no route {request.url.path}; POST /webhooks/<source> ({', '.join(valid)}), GET /healthz, GET /metrics"},
            status_code=404,
        )

    async def method_not_allowed(request: HTTPRequest, exc: Exception) -> Response:
        return JSONResponse(
            {"error": "MethodNotAllowed", "message": f"{request.method} is not allowed on {request.url.path}"},
            status_code=405,
        )

    async def server_error(request: HTTPRequest, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "InternalError", "message": "unexpected error; see the listener's log"}, status_code=500)

    def lifespan(app: Starlette):
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def span(app: Starlette):
            listener.start()
            try:
                yield
            finally:
                listener.stop()

        return span(app)

    app = Starlette(
        routes=[
            Route("/webhooks/{source}", webhook, methods=["POST", "OPTIONS"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed, 500: server_error},
        lifespan=lifespan,
    )
    return _WebhookFastPath(app, webhook, server_error)


class _WebhookFastPath:
    """``POST /webhooks/<source>`` (the listener's hot path) straight to its ASGI endpoint, without
    Starlette's middleware and route matching; everything else (and anything odd, such as a
    trailing slash) goes to the Starlette app, which answers it as before."""

    def __init__(self, app: Starlette, webhook: WebhookEndpoint, server_error: Any) -> None:
        self.app = app
        self.webhook = webhook
        self.server_error = server_error

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path = scope["path"]
            name = path[len("/webhooks/"):]
            if path.startswith("/webhooks/") and name and "/" not in name:
                scope["path_params"] = {"source": name}
                try:
                    await self.webhook(scope, receive, send)
                except Exception as exc:  # noqa: BLE001 - as Starlette's ServerErrorMiddleware: a 500, logged
                    response = await self.server_error(HTTPRequest(scope, receive, send), exc)
                    await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


#: after SIGTERM, how long open requests may still finish (a client still sending its body, a
#: delivery being stored); then they are cancelled and closed, the worker is stopped, and the
#: process exits 0. A delivery is answered 2xx only once stored, so nothing acknowledged is lost.
SHUTDOWN_TIMEOUT_ENV = "PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS"
DEFAULT_SHUTDOWN_TIMEOUT_MS = 10_000


def serve(listener: Listener, host: str, port: int, log_level: str = "info", *, tls_cert: Path | None = None,
          tls_key: Path | None = None, shutdown_timeout_ms: int = DEFAULT_SHUTDOWN_TIMEOUT_MS) -> None:
    import signal

    import uvicorn

    from .tls import CertReloader, server_context

    app = create_app(listener)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, server_header=False,
                            timeout_graceful_shutdown=shutdown_timeout_ms / 1000.0)
    config.load()
    reloader = None
    if tls_cert is not None:
        config.ssl = server_context(tls_cert, tls_key)  # reloaded in place when the files change
        reloader = CertReloader(config.ssl, tls_cert, tls_key)
        reloader.start()
    listener.shutdown_timeout = shutdown_timeout_ms / 1000.0
    log.info("listening on %s://%s:%d (state: %s, %d rule(s))", "https" if tls_cert else "http", host, port,
             listener.inbox.path, len(listener.rules))
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler found at start: a
    # no-op one makes a bounded, drained shutdown exit 0 instead of dying by the signal
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    uvicorn.Server(config).run()
    if reloader is not None:
        reloader.stop()
