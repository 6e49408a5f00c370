"""``/webhooks/<source>`` as a plain ASGI app: the listener's hot path.

Every delivery is read, verified, parsed and stored here, without Starlette's request and response
objects (they cost more per delivery than the signature check and the parse together). The
behaviour is the one ``server`` documents: 404 for an unknown source, 413 over ``MAX_BODY``, 400
for bad input or a client that left before its body was complete, 401 on a bad signature, 503
when the inbox cannot store, 200 ``{"stored": [...], "duplicate": bool}`` once durable.

The SQLite inbox is written by the loop itself (``inbox/loop_writer.py``); the PostgreSQL inbox's
writer thread answers through a future the loop awaits.
"""

from __future__ import annotations

import json
import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.datastructures import URL

from .errors import NotFoundError, PayloadError, PayloadTooLarge
from .metrics import UNKNOWN_SOURCE

MAX_BODY = 1024 * 1024
#: one encoder for every answer (json.dumps with options makes a new one per call)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ClientLeft(Exception):
    """The client disconnected before its body was complete."""


class JSONAnswer:
    """A JSON response sent with two ASGI messages (what Starlette's JSONResponse sends, minus its
    per-response header building)."""

    __slots__ = ("status", "body", "headers")

    def __init__(self, content: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = _ENCODER.encode(content).encode()
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(self.body)).encode())]
        if self.headers:
            raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


async def read_body(scope: Scope, receive: Receive, limit: int = MAX_BODY) -> bytes:
    """The request body; ``PayloadTooLarge`` when ``Content-Length`` or the streamed size is over
    ``limit``, ``PayloadError`` for a ``Content-Length`` that is no number, ``ClientLeft`` when
    the client disconnected first."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise PayloadError(f"Content-Length {value.decode('latin-1')!r} is not a number",
                                   field="Content-Length") from None
            if declared > limit:
                raise PayloadTooLarge(f"body of {declared} bytes is over the {limit} byte limit", field="(body)",
                                      limit=limit)
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientLeft()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over the {limit} byte limit", field="(body)", limit=limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class WebhookEndpoint:
    """The ASGI app of ``POST``/``OPTIONS /webhooks/<source>`` (``scope["path_params"]["source"]``)."""

    def __init__(self, listener: Any) -> None:
        self.listener = listener  # server.Listener: sources, metrics, _request, handle_async
        self.valid = sorted(listener.sources)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        listener = self.listener
        name = scope["path_params"]["source"]
        if name not in listener.sources:
            listener.metrics.delivery(UNKNOWN_SOURCE, "unknown_source")
            err = NotFoundError(f"no webhook source {name!r}; valid sources: {', '.join(self.valid)}", valid=self.valid)
            await JSONAnswer(err.to_dict(), 404)(scope, receive, send)
            return
        method = scope["method"]
        try:
            body = await read_body(scope, receive) if method == "POST" else b""
        except PayloadTooLarge as exc:
            listener.metrics.delivery(name, "too_large")
            await JSONAnswer(exc.to_dict(), 413)(scope, receive, send)
            return
        except PayloadError as exc:
            listener.metrics.delivery(name, "bad_request")
            await JSONAnswer(exc.to_dict(), 400)(scope, receive, send)
            return
        except ClientLeft:
            listener.metrics.delivery(name, "bad_request")
            await send({"type": "http.response.start", "status": 400, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        qs = scope.get("query_string") or b""
        query = dict(parse_qsl(qs.decode("latin-1"), keep_blank_values=True)) if qs else {}
        path = scope["path"] if not scope.get("root_path") else URL(scope=scope).path
        req = listener._request(name, method, path, headers, body, query)
        client = scope.get("client")
        response, outcome = await listener.handle_async(name, req, client[0] if client else None)
        listener.metrics.delivery(name, outcome)
        if outcome in ("accepted", "duplicate"):
            listener.metrics.ack(name, time.perf_counter() - started)
        await response(scope, receive, send)
