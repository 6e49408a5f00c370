"""Local services the demo (and the lead-time benchmark) start: a real MLflow tracking server and
``pipeline-plugin serve``, each a child process on 127.0.0.1 in its own process group, with its
log in a file. Both are context managers that wait until the service answers and stop it (and its
workers) on exit.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import ServiceError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalService:
    name: str
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)


def _start(name: str, argv: list[str], env: dict[str, str], workdir: Path, port: int) -> LocalService:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return LocalService(name, proc, port, log_path)


def wait_http(service: LocalService, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise ServiceError(f"{service.name} exited with code {service.process.returncode} while starting; "
                               f"its log ({service.log_path}) ends with:\n{service.log_tail()}")
        try:
            with urllib.request.urlopen(service.url + path, timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    service.stop()
    raise ServiceError(f"{service.name} did not answer {service.url}{path} within {timeout:.0f}s ({last}); "
                       f"see {service.log_path}")


def mlflow_binary() -> str:
    here = Path(sys.executable).parent / "mlflow"
    found = str(here) if here.exists() else shutil.which("mlflow")
    if not found:
        raise ServiceError("the mlflow command is not installed; install it with `pip install 'pipeline-plugin[mlflow]'`")
    return found


@contextmanager
def mlflow_server(workdir: Path, port: int | None = None, timeout: float = 180) -> Iterator[LocalService]:
    """``mlflow server`` with a sqlite backend and local artifacts under ``workdir``, able to deliver
    webhooks to loopback listeners."""
    workdir = Path(workdir)
    port = port or free_port()
    key_file = workdir / "webhook-encryption.key"
    workdir.mkdir(parents=True, exist_ok=True)
    if not key_file.exists():  # MLflow encrypts webhook secrets with it; kept so a re-run can read them
        key_file.write_text(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
        key_file.chmod(0o600)
    env = dict(os.environ)
    env.update(
        MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
        MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
        MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=key_file.read_text().strip(),
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    argv = [mlflow_binary(), "server", "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
            "--default-artifact-root", (workdir / "artifacts").as_uri(), "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]
    service = _start("mlflow", argv, env, workdir, port)
    try:
        wait_http(service, "/health", timeout)
        yield service
    finally:
        service.stop()


@contextmanager
def serve(state_dir: Path, triggers: Path, config: Path, env: dict[str, str], workdir: Path,
          port: int | None = None, timeout: float = 60) -> Iterator[LocalService]:
    """``pipeline-plugin serve`` (listener + worker) as a child process."""
    port = port or free_port()
    argv = [sys.executable, "-m", "pipeline_plugin.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--state-dir", str(state_dir), "--triggers", str(triggers), "--config", str(config)]
    service = _start("serve", argv, {**os.environ, **env}, workdir, port)
    try:
        wait_http(service, "/healthz", timeout)
        yield service
    finally:
        service.stop()
