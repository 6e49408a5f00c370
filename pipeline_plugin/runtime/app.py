"""The scoring HTTP app: a small raw-ASGI application (no framework on the hot path).

Routes: ``POST|GET|OPTIONS /score``, ``GET /`` and ``GET /readyz`` (503 until init() succeeded in every
worker, then 200), ``GET /livez`` (liveness: answers while init() runs), ``GET /swagger.json``,
``GET /metrics``.
Response and error shapes follow azureml-inference-server-http 1.5.1 (``{"message": ...}``,
``x-ms-run-function-failed``, ``x-ms-run-fn-exec-ms``, ``x-request-id``, ``x-ms-request-id``,
``x-ms-client-request-id``), except where the issue asks for more precise statuses (400 for input
the schema rejects, 504 for a timeout, 413 for an oversized body)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

from .config import RuntimeConfig, read_key_file
from .metrics import Metrics
from .script import MODE_JSON, MODE_RAW, MODE_SCHEMA, InputError, RunError, UserScript, too_deep
from .swagger import Swagger, SwaggerError

log = logging.getLogger("pipeline_plugin.runtime")

HEADER_LIMIT = 100  # longest accepted request id, as Azure
NOT_FOUND = ("The requested URL was not found on the server. If you entered the URL manually please check "
             "your spelling and try again.")
NOT_ALLOWED = "The method is not allowed for the requested URL."
SERVER_VERSION = "pipeline-plugin-runtime/" + str(getattr(sys.modules.get("pipeline_plugin"), "__version__", "0"))
CORS_METHODS = b"GET, POST"

_JSON = (b"content-type", b"application/json")
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_OK_FLAG = (b"x-ms-run-function-failed", b"False")
_FAIL_FLAG = (b"x-ms-run-function-failed", b"True")
_SERVER = (b"x-ms-server-version", SERVER_VERSION.encode())
_PLAIN = (dict, list, str, int, float, bool)  # run() results that are JSON as they are


class ScoringTimeout(BaseException):
    """Raised inside run() by SIGALRM when SCORING_TIMEOUT_MS passed (a BaseException, so that a
    script's ``except Exception`` does not swallow it)."""


def _json_default(o: Any) -> Any:
    """What json.dumps cannot encode but scripts commonly return: numpy arrays/scalars, sets, dates."""
    tolist = getattr(o, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    isoformat = getattr(o, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _parse_query(query: bytes) -> dict[str, Any]:
    """Query parameters as run() input (GET /score), each value decoded as JSON if it is JSON."""
    grouped: dict[str, list[Any]] = {}
    for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        try:
            value = json.loads(v)
        except ValueError:
            value = v
        except RecursionError:
            raise too_deep(f"the query parameter {k!r}") from None
        grouped.setdefault(k, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in grouped.items()}


def _title(name: str) -> str:
    return "-".join(p.capitalize() for p in name.split("-"))


def _error_body(message: str, request_id: str) -> bytes:
    return json.dumps({"message": message, "request_id": request_id}).encode("utf-8")


class ScoringApp:
    def __init__(self, cfg: RuntimeConfig, metrics: Metrics, ready_flags, worker: int = 0,
                 on_fatal: Callable[[int], None] | None = None):
        self.cfg = cfg
        self.metrics = metrics
        self.ready_flags = ready_flags
        self.worker = worker
        self.on_fatal = on_fatal or (lambda code: os._exit(code))
        self.script = UserScript(cfg.entry_script, [p for p in (cfg.app_root, cfg.source_dir) if p])
        self.swagger: Swagger | None = None
        self.ready = False
        self.timeout_s = cfg.timeout_ms / 1000.0
        self.keys = [k.encode("utf-8") for k in cfg.keys]
        # a mounted key file (a Kubernetes Secret volume, a rotated file) is re-read when it changes
        self._keys_checked = time.monotonic()
        self._keys_mtime = self._key_file_mtime()
        self.cors_any = "*" in cfg.cors_origins
        self.cors = {o.encode("latin-1") for o in cfg.cors_origins}
        self.pool: ThreadPoolExecutor | None = None
        self.inline = False  # decided at startup: run() on the event loop, bounded by SIGALRM
        self._in_run = False
        self._timed_out = False

    # ---------------------------------------------------------------- lifecycle
    def load_and_init(self) -> None:
        """Import the script and call init(); on failure log why and stop the process (exit 3, as Azure)."""
        stage = "import"
        try:
            started = time.perf_counter()
            self.script.load()
            self.swagger = Swagger(self.script.run, self.cfg.app_root, self.cfg.service_name,
                                   self.cfg.service_version, self.cfg.service_path_prefix)
            stage = "init()"
            self.script.call_init()
        except BaseException:  # noqa: BLE001 - anything from user code stops the worker, with its traceback
            log.error("%s of the entry script %s failed:\n%s", stage, self.cfg.entry_script, traceback.format_exc())
            self._log_model_dir()
            self.on_fatal(3)
            return
        self.ready = True
        self.ready_flags[self.worker] = 1
        log.info("worker %d (pid %d) ready: init() took %.0f ms", self.worker, os.getpid(),
                 (time.perf_counter() - started) * 1000)

    def _log_model_dir(self) -> None:
        model_dir = self.cfg.model_dir
        if not model_dir or not Path(model_dir).exists():
            return
        lines = []
        for root, dirs, files in os.walk(model_dir):
            dirs.sort()
            depth = Path(root).relative_to(model_dir).parts
            lines.append("    " * len(depth) + (Path(root).name or root) + "/")
            lines += ["    " * (len(depth) + 1) + f for f in sorted(files)]
            if len(lines) > 200:
                break
        log.info("AZUREML_MODEL_DIR=%s contains:\n%s", model_dir, "\n".join(lines[:200]))

    def _on_alarm(self, signum, frame) -> None:
        if self._in_run:
            self._timed_out = True
            raise ScoringTimeout()

    def _invoke_inline(self, kwargs: dict, headers: dict | None) -> tuple[Any, float]:
        """run() on the event loop's thread (no thread hop: the fastest path), bounded by SIGALRM."""
        self._timed_out = False
        self._in_run = True
        signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
        try:
            return self.script.invoke(kwargs, headers)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._in_run = False

    def all_ready(self) -> bool:
        return all(self.ready_flags)

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.cfg.threads == 0 and threading.current_thread() is threading.main_thread():
                    self.inline = True
                    signal.signal(signal.SIGALRM, self._on_alarm)
                else:
                    self.pool = ThreadPoolExecutor(max(1, self.cfg.threads), thread_name_prefix="score")
                if self.cfg.threads == 1:
                    # init() and run() on the same thread, for objects bound to their creating thread
                    self.pool.submit(self.load_and_init)
                else:
                    threading.Thread(target=self.load_and_init, name="init", daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    self.pool.shutdown(wait=False)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---------------------------------------------------------------- HTTP
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def http(self, scope, receive, send) -> None:
        path = scope["path"]
        method = scope["method"]
        h = dict(scope["headers"])

        # request ids, as Azure: x-request-id (generated if absent); x-ms-request-id (legacy client id);
        # x-ms-client-request-id echoed when sent
        request_id = h.get(b"x-request-id")
        request_id = request_id.decode("latin-1") if request_id else str(uuid.uuid4())
        client_id = h.get(b"x-ms-client-request-id", b"").decode("latin-1")
        legacy_id = h.get(b"x-ms-request-id", b"").decode("latin-1")
        if legacy_id:
            client_id = client_id or legacy_id
        else:
            legacy_id = client_id or request_id
        headers = [_SERVER]
        if len(request_id) > HEADER_LIMIT or len(legacy_id) > HEADER_LIMIT or len(client_id) > HEADER_LIMIT:
            request_id = str(uuid.uuid4())
            headers.append((b"x-request-id", request_id.encode()))
            return await self._finish(send, path, 431, _error_body(
                f"x-request-id, x-ms-request-id and x-ms-client-request-id must not exceed {HEADER_LIMIT} "
                f"characters", request_id), headers + [_JSON])
        headers.append((b"x-request-id", request_id.encode("latin-1")))
        headers.append((b"x-ms-request-id", legacy_id.encode("latin-1")))
        if client_id:
            headers.append((b"x-ms-client-request-id", client_id.encode("latin-1")))
        trace = h.get(b"traceid")
        if trace:
            headers.append((b"TraceId", trace))
        origin = h.get(b"origin")
        if origin and self.cors and (self.cors_any or origin in self.cors):
            headers.append((b"access-control-allow-origin", b"*" if self.cors_any else origin))
            if not self.cors_any:
                headers.append((b"vary", b"Origin"))
            if method == "OPTIONS" and b"access-control-request-method" in h:  # CORS preflight
                headers.append((b"access-control-allow-methods", CORS_METHODS))
                requested = h.get(b"access-control-request-headers")
                if requested:
                    headers.append((b"access-control-allow-headers", requested))
                return await self._finish(send, path, 200, b"", headers + [_TEXT])

        if path == "/score":
            self.metrics.score_started()
            started = time.perf_counter()
            try:
                status, body, extra = await self.score(scope, receive, method, h, request_id)
            except Exception:  # noqa: BLE001 - a bug of ours must still be a counted, logged JSON 500
                log.error("request %s: the runtime failed:\n%s", request_id, traceback.format_exc())
                status, body, extra = 500, _error_body(
                    f"internal error of the scoring runtime; the traceback is in the server log under request id "
                    f"{request_id}", request_id), [_JSON, _FAIL_FLAG]
            finally:
                self.metrics.score_finished(time.perf_counter() - started)
            headers += extra
            if type(body) is not bytes:  # a streamed AMLResponse
                return await self._stream(receive, send, path, status, body, headers, request_id)
            return await self._finish(send, path, status, body, headers)

        if path not in ("/", "/readyz", "/livez", "/swagger.json", "/metrics"):
            return await self._finish(send, path, 404, _error_body(NOT_FOUND, request_id), headers + [_JSON])
        if method not in ("GET", "HEAD"):
            return await self._finish(send, path, 405, _error_body(NOT_ALLOWED, request_id), headers + [_JSON])
        if path == "/livez":
            return await self._finish(send, path, 200, b"Alive", headers + [_TEXT])
        if path in ("/", "/readyz"):
            # as Azure's GET /: healthy once init() succeeded (here: in every worker)
            if self.all_ready():
                return await self._finish(send, path, 200, b"Healthy" if path == "/" else b"Ready",
                                          headers + [_TEXT])
            return await self._finish(send, path, 503, _error_body(
                "init() has not finished yet; the service is starting (GET /livez answers meanwhile)",
                request_id), headers + [_JSON, (b"retry-after", b"1")])
        if path == "/metrics":
            return await self._finish(send, path, 200, self.metrics.render(),
                                      headers + [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])
        # /swagger.json
        if self.swagger is None:
            return await self._finish(send, path, 503, _error_body(
                "the entry script is still loading; retry when GET /readyz answers 200", request_id),
                headers + [_JSON, (b"retry-after", b"1")])
        version = None
        for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            if k == "version":
                version = v
                break
        try:
            doc = self.swagger.get(version)
        except SwaggerError as exc:
            return await self._finish(send, path, 404, _error_body(str(exc), request_id), headers + [_JSON])
        return await self._finish(send, path, 200, doc, headers + [_JSON])

    async def _finish(self, send, route: str, status: int, body: bytes, headers: list) -> None:
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.count(route, status)

    async def _stream(self, receive, send, route: str, status: int, response, headers: list,
                      request_id: str) -> None:
        """Send a streamed (generator) AMLResponse chunked, as Azure does. Each chunk is produced in
        the scoring thread (it is the script's code); an exception midway is logged and the
        connection is closed without the final chunk, so the client sees the answer is cut. A client
        that goes away stops the generator (it would hold the scoring thread for nobody)."""
        chunks = response.iter_encoded()
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        await send({"type": "http.response.start", "status": status, "headers": headers})
        self.metrics.count(route, status)
        try:
            while True:
                if gone.is_set():
                    log.info("request %s: the client went away; the streamed response is stopped", request_id)
                    return
                if self.inline:
                    await asyncio.sleep(0)  # let the loop see a disconnect between chunks
                    chunk = next(chunks, None)
                else:
                    chunk = await loop.run_in_executor(self.pool, next, chunks, None)
                if chunk is None:
                    break
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except Exception:  # noqa: BLE001 - the script's generator (or a client gone): log, drop the connection
            log.error("request %s: the streamed response stopped midway:\n%s", request_id, traceback.format_exc())
        finally:
            watcher.cancel()
            close = getattr(response, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass

    def _key_file_mtime(self) -> float | None:
        try:
            return self.cfg.keys_file.stat().st_mtime_ns if self.cfg.keys_file else None
        except OSError:
            return None

    def _refresh_keys(self) -> None:
        """At most once a second: if the key file changed, take its keys (with the environment's).
        A file that cannot be read or holds no key keeps the keys in use, and says so."""
        now = time.monotonic()
        if self.cfg.keys_file is None or now - self._keys_checked < 1.0:
            return
        self._keys_checked = now
        mtime = self._key_file_mtime()
        if mtime == self._keys_mtime:
            return
        self._keys_mtime = mtime
        try:
            keys = tuple(dict.fromkeys((*self.cfg.env_keys, *read_key_file(self.cfg.keys_file))))
        except OSError as exc:
            log.warning("scoring key file %s cannot be read (%s); keeping the keys in use", self.cfg.keys_file,
                        exc.strerror)
            return
        if not keys:
            log.warning("scoring key file %s holds no key; keeping the keys in use", self.cfg.keys_file)
            return
        self.keys = [k.encode("utf-8") for k in keys]
        log.info("scoring keys reloaded from %s (%d key(s))", self.cfg.keys_file, len(keys))

    def _authorized(self, h: dict) -> bool:
        self._refresh_keys()
        value = h.get(b"authorization", b"")
        scheme, _, token = value.partition(b" ")
        token = token.strip()
        ok = False
        for key in self.keys:  # compare against every key: time does not reveal which matched
            ok |= hmac.compare_digest(token, key)
        return ok and scheme.lower() == b"bearer"

    async def _read_body(self, receive, h: dict) -> bytes | None:
        limit = self.cfg.max_body_bytes
        declared = h.get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    return None
            except ValueError:
                pass
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body", False):
            return body if len(body) <= limit else None
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def score(self, scope, receive, method: str, h: dict, request_id: str) -> tuple[int, bytes, list]:
        err = [_JSON, _OK_FLAG]
        if not self.ready:
            return 503, _error_body("init() has not finished yet; retry when GET /readyz answers 200",
                                    request_id), err + [(b"retry-after", b"1")]
        mode = self.script.mode
        if method not in ("GET", "POST", "OPTIONS"):
            return 405, _error_body(NOT_ALLOWED, request_id), err
        if method == "OPTIONS" and mode != MODE_RAW:
            return 200, b"", [_TEXT]
        if self.keys and not self._authorized(h):
            return 401, _error_body("missing or wrong scoring key: send the header 'Authorization: Bearer "
                                    "<key>'", request_id), err + [(b"www-authenticate", b"Bearer")]
        body = await self._read_body(receive, h)
        if body is None:
            return 413, _error_body(f"the request body is larger than the limit of {self.cfg.max_body_bytes} "
                                    f"bytes (PIPELINE_PLUGIN_MAX_BODY_BYTES)", request_id), err
        query = scope.get("query_string", b"")

        # --- the input run() takes
        try:
            if mode == MODE_JSON:
                if method == "GET":
                    kwargs = {self.script.first_param: json.dumps(_parse_query(query))}
                else:
                    # as Azure: run() gets the text as sent, even if it is not JSON (a script may answer
                    # that itself); if run() fails decoding it, script.invoke makes that a 400
                    try:
                        kwargs = {self.script.first_param: body.decode("utf-8")}
                    except UnicodeDecodeError as exc:
                        raise InputError(f"Input cannot be decoded as UTF-8: {exc}") from None
            elif mode == MODE_SCHEMA:
                if method == "GET":
                    data = _parse_query(query)
                else:
                    ctype = h.get(b"content-type", b"").split(b";")[0].strip().lower()
                    if not (ctype == b"application/json" or (ctype.startswith(b"application/")
                                                             and ctype.endswith(b"+json"))):
                        raise InputError("Expects Content-Type to be application/json", 415)
                    if not body:
                        raise InputError("POST body is empty. Expecting a JSON dictionary.")
                    try:
                        data = json.loads(body)
                    except ValueError as exc:
                        raise InputError(f"POST body could not be decoded as JSON: {exc}") from None
                    except RecursionError:
                        raise too_deep("the POST body") from None
                if not isinstance(data, dict):
                    raise InputError("POST body should be a JSON dictionary whose keys are run()'s parameters.")
                kwargs = self.script.extract_parameters(data)
            else:
                from .wrappers import AMLRequest  # werkzeug: loaded for @rawhttp scripts only

                kwargs = {self.script.first_param: AMLRequest.from_scope(scope, body)}
        except InputError as exc:
            log.info("request %s: %d %s", request_id, exc.status, exc.message)
            return exc.status, _error_body(exc.message, request_id), err

        run_headers = None
        if self.script.wants_headers:
            run_headers = {_title(k.decode("latin-1")): v.decode("latin-1") for k, v in scope["headers"]}

        # --- run() in the worker's scoring thread(s), bounded by SCORING_TIMEOUT_MS
        try:
            if self.inline:
                output, elapsed_ms = self._invoke_inline(kwargs, run_headers)
                if self._timed_out:  # the script caught the timeout and returned anyway: still too late
                    raise ScoringTimeout()
            else:
                future = asyncio.get_running_loop().run_in_executor(self.pool, self.script.invoke, kwargs,
                                                                    run_headers)
                output, elapsed_ms = await asyncio.wait_for(future, self.timeout_s)
        except (asyncio.TimeoutError, ScoringTimeout):
            log.error("request %s: run() did not finish within SCORING_TIMEOUT_MS=%d", request_id,
                      self.cfg.timeout_ms)
            return 504, _error_body(f"Scoring timeout after {self.cfg.timeout_ms} ms (SCORING_TIMEOUT_MS)",
                                    request_id), [_JSON, _FAIL_FLAG]
        except InputError as exc:
            log.info("request %s: %d %s", request_id, exc.status, exc.message)
            return exc.status, _error_body(exc.message, request_id), err
        except RunError as exc:
            cause = exc.__cause__ or exc
            log.error("request %s: run() raised %s:\n%s", request_id, type(cause).__name__,
                      "".join(traceback.format_exception(cause)))
            return 500, _error_body(
                f"run() raised {type(cause).__name__}; the traceback is in the server log under request id "
                f"{request_id}", request_id), [_JSON, _FAIL_FLAG]

        # --- the response
        timing = (b"x-ms-run-fn-exec-ms", f"{elapsed_ms:.3f}".encode())
        if type(output) not in _PLAIN and hasattr(output, "status_code") and hasattr(output, "headers") and (
                hasattr(output, "get_data") or hasattr(output, "iter_encoded")):
            return self._user_response(output, timing)
        if output is None:
            return 200, b"{}", [_JSON, _OK_FLAG, timing]
        try:
            data = json.dumps(output, default=_json_default).encode("utf-8")
        except (TypeError, ValueError) as exc:
            log.error("request %s: run() returned a value that cannot be encoded as JSON: %s", request_id, exc)
            return 500, _error_body(f"run() returned a value that cannot be encoded as JSON: {exc}; return "
                                    f"lists, dicts, numbers and strings (or an AMLResponse)", request_id), \
                [_JSON, _FAIL_FLAG, timing]
        return 200, data, [_JSON, _OK_FLAG, timing]

    @staticmethod
    def _user_response(output: Any, timing: tuple) -> tuple[int, Any, list]:
        """An AMLResponse, or any Flask/werkzeug Response (Azure's own AMLResponse class), as
        azureml-inference-server-http sends it: its status and headers, x-ms-run-function-failed
        forced to True for 5xx; a streamed (generator) body is sent chunked."""
        status = int(output.status_code)
        items = output.headers.items() if hasattr(output.headers, "items") else output.headers
        headers = []
        failed = None
        for k, v in items:
            name = k.lower()
            if name == "content-length":
                continue
            if name == "x-ms-run-function-failed":
                failed = str(v)
                continue
            headers.append((k.encode("latin-1"), str(v).encode("latin-1")))
        if status >= 500:
            headers.append(_FAIL_FLAG)
        elif failed is not None:
            headers.append((b"x-ms-run-function-failed", failed.encode("latin-1")))
        headers.append(timing)
        if getattr(output, "is_streamed", False):
            return status, output, headers
        body = output.get_data()
        close = getattr(output, "close", None)
        if callable(close):
            close()
        return status, body, headers
