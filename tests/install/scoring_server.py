"""A tiny scoring service for smoke-test runs: ``POST /score`` answers ``{"result": [...]}`` (one
number per input row) and ``GET /swagger.json`` declares that output schema, so smoke-test's schema
check (jsonschema) runs."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

SWAGGER = {
    "swagger": "2.0",
    "info": {"title": "tiny", "version": "1"},
    "paths": {"/score": {"post": {"responses": {"200": {"schema": {"$ref": "#/definitions/ServiceOutput"}}}}}},
    "definitions": {"ServiceOutput": {"type": "object", "required": ["result"],
                                      "properties": {"result": {"type": "array", "items": {"type": "number"}}}}},
}


class _Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/swagger.json":
            self._send(200, SWAGGER)
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        try:
            rows = json.loads(self.rfile.read(length) or b"{}").get("data") or []
        except ValueError:
            self._send(400, {"error": "not JSON"})
            return
        if self.path != "/score":
            self._send(404, {"error": "not found"})
            return
        self._send(200, {"result": [float(sum(r)) if isinstance(r, list) else 0.0 for r in rows]})

    def log_message(self, *_args: object) -> None:
        pass


@contextlib.contextmanager
def scoring_server() -> Iterator[str]:
    """Yields the scoring URI (http://127.0.0.1:PORT/score)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/score"
    finally:
        server.shutdown()
        server.server_close()
