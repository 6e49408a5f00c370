"""TLS for `pipeline-plugin serve`: the server's SSLContext, and a watcher that reloads the
certificate and key into that same context when their files change (new handshakes use the new
certificate; connections already open keep theirs; no restart).

Files are compared by (mtime, size, inode) of what the path resolves to, so both an in-place
rewrite and a Kubernetes Secret volume update (an atomic swap of the ``..data`` symlink) are seen.
A pair that does not load (for example the certificate written but not yet its key) is logged once
and retried at the next poll; the previous certificate stays in use meanwhile.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger("pipeline_plugin.server")

#: seconds between two looks at the certificate files
POLL_SECONDS = 2.0


def _signature(*paths: Path) -> tuple:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server SSLContext (TLS 1.2+) with ``cert``/``key`` loaded; ConfigError naming the flag if not."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise ConfigError(f"{flag} {str(path)!r}: no such file; give the PEM file's path")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"--tls-cert {str(cert)!r} / --tls-key {str(key)!r} do not load ({exc}); give a PEM certificate "
            "(chain) and its unencrypted PEM private key"
        ) from exc
    return ctx


class CertReloader:
    """Polls ``cert`` and ``key``; on a change loads them into ``context`` (used by the live server)."""

    def __init__(self, context: ssl.SSLContext, cert: Path, key: Path, interval: float = POLL_SECONDS):
        self.context, self.cert, self.key, self.interval = context, Path(cert), Path(key), interval
        self._loaded = _signature(self.cert, self.key)
        self._failed: tuple | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reloads = 0

    def check(self) -> bool:
        """Reload if the files changed since the last successful load; True if it reloaded."""
        sig = _signature(self.cert, self.key)
        if sig == self._loaded or sig == self._failed:
            return False
        try:
            self.context.load_cert_chain(str(self.cert), str(self.key))
        except (ssl.SSLError, OSError) as exc:
            self._failed = sig
            log.warning("TLS certificate %s / key %s changed but do not load (%s); still serving the previous "
                        "certificate, retrying when the files change again", self.cert, self.key, exc)
            return False
        self._loaded, self._failed = sig, None
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                log.exception("TLS certificate watcher")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tls-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
