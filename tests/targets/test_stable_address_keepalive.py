"""The stable address (nginx) of the docker and process targets, switched again and again while
clients that keep their connections alive (a ``requests.Session``, as most clients) send requests:
not one request may fail. A reload makes nginx's old worker close its idle client connections; a
client that sent its next request on one at that moment got "Remote end closed connection without
response" (once in a few CI runs of the real-model update test)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from loadgen import LoadLoop

from pipeline_plugin.targets.nginx_proxy import StableAddress, pick_port


def upstream(version: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"version": version}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_keep_alive_clients_lose_no_request_across_many_switches(tmp_path):
    servers = [upstream("1"), upstream("2")]
    address = StableAddress(tmp_path / "address", "keepalive-test")
    port = pick_port()
    try:
        address.switch(port, f"127.0.0.1:{servers[0].server_port}", "g0")
        with LoadLoop(port, workers=0, sessions=6, max_requests=1_000_000, max_seconds=120, body="{}") as load:
            for n in range(1, 31):
                address.switch(port, f"127.0.0.1:{servers[n % 2].server_port}", f"g{n}")
        assert load.failures == [], (len(load.failures), load.failures[:3])
        assert load.ok > 300 and set(load.versions) == {"1", "2"}, (load.ok, load.versions)
    finally:
        address.stop()
        for server in servers:
            server.shutdown()
