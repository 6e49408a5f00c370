"""The stable address of a deployment: one nginx (Debian's package) per (service, env).

Each stable address 127.0.0.1:<port> is served by its own nginx master process, whose prefix
directory (under the state dir) holds ``nginx.conf``, ``nginx.pid``, logs and temp files. Switching
to a new upstream rewrites ``nginx.conf`` and sends SIGHUP: nginx starts workers with the new
upstream and lets the old workers finish their in-flight requests before they exit. ``switch``
waits for both: until the new configuration answers, then until no old worker is left, so the
caller can stop the old upstream without failing a request.

Used by the ``docker`` and ``process`` targets; not a target itself.
"""

from __future__ import annotations

import errno
import grp
import http.client
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, ServiceError

#: a request to this path answers the config generation nginx serves, without touching the upstream
GENERATION_PATH = "/__pipeline-plugin/generation"
#: how long old workers may take to finish in-flight requests before nginx closes them
DRAIN_TIMEOUT_S = 120

_CONF = """\
# managed by pipeline-plugin: the stable address of {label}
# generation {generation}; upstream {upstream_list}
{user}daemon on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_shutdown_timeout {drain}s;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server_tokens off;
    # every answer closes its client connection: a reload makes the old worker close its idle
    # keep-alive connections, and a client that sent its next request on one at that moment got no
    # answer (a POST it must not send again). A connection per request on loopback costs little
    keepalive_timeout 0;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    client_max_body_size 100m;
    upstream deployment {{
        # no upstream keepalive: on loopback a connection per request costs ~nothing, and a pooled
        # connection the runtime closes when idle could fail a POST that nginx must not retry
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location = {generation_path} {{
            default_type text/plain;
            return 200 "{generation}\\n";
        }}
        location / {{
            proxy_pass http://deployment;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # stream request and response bodies: no temp files, which the unprivileged workers could
            # not write when the state dir is private (e.g. under /root)
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not found:
        raise ServiceError(
            "nginx is not installed; the stable address of a deployment is an nginx reverse proxy. "
            "Install it with `apt-get install nginx-light` (or run scripts/setup.sh)"
        )
    return found


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def pick_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_user() -> str:
    """nginx workers drop root; name a user and group that exist on this machine."""
    if os.geteuid() != 0:
        return ""
    for user, group in (("www-data", "www-data"), ("nobody", "nogroup"), ("nobody", "nobody")):
        try:
            pwd.getpwnam(user)
            grp.getgrnam(group)
        except KeyError:
            continue
        return f"user {user} {group};\n"
    return ""


class StableAddress:
    """The nginx serving one stable address; ``directory`` is its prefix (created on demand)."""

    def __init__(self, directory: Path, label: str) -> None:
        self.directory = Path(directory)
        self.label = label

    @property
    def conf(self) -> Path:
        return self.directory / "nginx.conf"

    def pid(self) -> int | None:
        """The running nginx master's pid, or None when it is not running."""
        try:
            pid = int((self.directory / "nginx.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return None
        return pid if b"nginx: master process" in cmdline else None

    def running(self) -> bool:
        return self.pid() is not None

    def served_generation(self, port: int, timeout: float = 2.0) -> str | None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", GENERATION_PATH)
            resp = conn.getresponse()
            body = resp.read().decode().strip()
            return body if resp.status == 200 else None
        except OSError:
            return None
        finally:
            conn.close()

    def switch(
        self,
        port: int,
        upstream: str | list[str],
        generation: str,
        progress: Callable[[str], None] = lambda _m: None,
        timeout: float = 30.0,
    ) -> None:
        """Point the stable address at ``upstream`` (host:port, or several: round robin) and return
        once no request can still reach the previous upstream (new config answering, old workers gone)."""
        servers = [upstream] if isinstance(upstream, str) else list(upstream)
        if not servers:
            raise ValueError("switch needs at least one upstream")
        nginx = nginx_binary()
        for sub in ("tmp", "logs"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        text = _CONF.format(
            label=self.label,
            generation=generation,
            upstream_list=" ".join(servers),
            servers="\n".join(f"        server {server} max_fails=0;" for server in servers),
            user=_worker_user(),
            prefix=self.directory,
            drain=DRAIN_TIMEOUT_S,
            port=int(port),
            generation_path=GENERATION_PATH,
        )
        pid = self.pid()
        old_conf = self.conf.read_text() if self.conf.exists() else None
        if pid is not None and old_conf == text and self.served_generation(port) == generation:
            return  # already serving exactly this
        listening_same_port = old_conf is not None and f"listen 127.0.0.1:{int(port)};" in old_conf
        if (pid is None or not listening_same_port) and not port_is_free(port):
            raise ConfigError(
                f"port {port} on 127.0.0.1 is already in use, so it cannot be the stable address of "
                f"{self.label}; pass another --port (or stop what listens there)"
            )
        tmp = self.conf.with_suffix(".conf.new")
        tmp.write_text(text)
        check = subprocess.run(
            [nginx, "-t", "-q", "-p", str(self.directory), "-c", str(tmp), "-e", str(self.directory / "error.log")],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise ServiceError(f"nginx rejected the configuration for {self.label}: {check.stderr.strip()}")
        os.replace(tmp, self.conf)
        if pid is None:
            progress(f"starting nginx for the stable address 127.0.0.1:{port}")
            started = subprocess.run(
                [nginx, "-p", str(self.directory), "-c", str(self.conf), "-e", str(self.directory / "error.log")],
                capture_output=True,
                text=True,
                start_new_session=True,
            )
            if started.returncode != 0:
                raise ServiceError(f"nginx did not start for {self.label}: {started.stderr.strip() or self._log_tail()}")
            old_workers: set[int] = set()
        else:
            progress(f"switching 127.0.0.1:{port} to {', '.join(servers)} (nginx reload)")
            old_workers = set(self._workers(pid))
            os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.served_generation(port) != generation:
            if time.monotonic() > deadline:
                raise ServiceError(f"nginx for {self.label} did not serve the new configuration within {timeout:.0f}s: {self._log_tail()}")
            time.sleep(0.05)
        if old_workers:
            progress("waiting for in-flight requests to the previous version to finish")
            self.wait_for_exit(old_workers, DRAIN_TIMEOUT_S + 10)

    def switch_back(
        self, port: int, upstream: str | list[str], generation: str, progress: Callable[[str], None], what: str
    ) -> None:
        """After a failed switch, point the address at the previous ``upstream`` again (a no-op when it
        never left it), so that removing the new one cannot take the address down; a failure here is
        reported through ``progress``, so that the original error surfaces."""
        try:
            self.switch(port, upstream, generation, progress)
        except Exception as exc:  # noqa: BLE001 - report, and let the original error surface
            progress(f"warning: could not point 127.0.0.1:{port} back at {what}: {exc}")

    def stop(self, timeout: float = DRAIN_TIMEOUT_S + 10) -> None:
        """Graceful stop (SIGQUIT: in-flight requests finish); a no-op when not running."""
        pid = self.pid()
        if pid is None:
            return
        workers = set(self._workers(pid))
        try:
            os.kill(pid, signal.SIGQUIT)
        except ProcessLookupError:
            return
        if not self.wait_for_exit({pid} | workers, timeout):
            os.kill(pid, signal.SIGTERM)
            self.wait_for_exit({pid}, 5)

    @staticmethod
    def wait_for_exit(pids: set[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            alive = {p for p in pids if _alive(p)}
            if not alive:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    @staticmethod
    def _workers(master: int) -> list[int]:
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 1 and fields[1] == str(master):
                out.append(int(entry.name))
        return out

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join((self.directory / "error.log").read_text().strip().splitlines()[-lines:])
        except OSError:
            return "(no nginx error log)"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
