"""A tiny stand-in for the scoring runtime (stdlib only), used to test deploy targets fast.

Same contract as ``python -m pipeline_plugin.runtime``: ``PORT``, ``GET /`` health, ``GET /readyz``
(200 after ``READY_DELAY_S``), ``POST /score`` (``{"data": ...}``; ``{"sleep": s}`` holds the
request), ``GET /swagger.json``, ``PIPELINE_PLUGIN_SCORING_KEYS``. It answers with ``VERSION``
so a test can tell which version served a request; ``FAIL_READY=1`` never gets ready;
``CRASH=1`` exits with code 3 at start.
"""

import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.monotonic()
VERSION = os.environ.get("VERSION", "0")
KEYS = [k for k in os.environ.get("PIPELINE_PLUGIN_SCORING_KEYS", "").split(",") if k]
if os.environ.get("PIPELINE_PLUGIN_SCORING_KEYS_FILE"):
    with open(os.environ["PIPELINE_PLUGIN_SCORING_KEYS_FILE"]) as fh:
        KEYS += [k.strip() for k in fh.read().replace(",", "\n").splitlines() if k.strip()]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/":
            self._send(200, {"status": "healthy"})
        elif self.path == "/readyz":
            ready = os.environ.get("FAIL_READY") != "1" and time.monotonic() - STARTED >= float(os.environ.get("READY_DELAY_S", "0"))
            self._send(200 if ready else 503, {"ready": ready})
        elif self.path == "/swagger.json":
            self._send(200, {"swagger": "2.0", "info": {"title": "test", "version": VERSION}})
        elif self.path == "/env":
            env = {k: v for k, v in os.environ.items() if k.startswith(("APP_", "AZUREML_", "AML_"))}
            self._send(200, env | {"uid": os.getuid(), "hostname": socket.gethostname()})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/score":
            self._send(404, {"error": "not found"})
            return
        if KEYS and self.headers.get("Authorization") not in {f"Bearer {k}" for k in KEYS}:
            self._send(401, {"error": "missing or wrong scoring key"})
            return
        payload = json.loads(body or b"{}")
        time.sleep(float(payload.get("sleep", 0)))
        self._send(200, {"version": VERSION, "result": payload.get("data")})


def main():
    if os.environ.get("CRASH") == "1":
        print("init() failed: model file is corrupt", flush=True)
        sys.exit(3)
    server = ThreadingHTTPServer((os.environ.get("PIPELINE_PLUGIN_HOST", "0.0.0.0"), int(os.environ.get("PORT", "5001"))), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
