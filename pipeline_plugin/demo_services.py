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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TypeVar

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
    env: dict[str, str] = field(default_factory=dict)
    #: seconds ``stop`` waits after SIGTERM before SIGKILL
    stop_timeout: float = 15

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=self.stop_timeout)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)


S = TypeVar("S", bound=LocalService)


def start(name: str, argv: list[str], env: dict[str, str], workdir: Path, port: int,
          kind: type[S] = LocalService) -> S:  # type: ignore[assignment]
    """Start ``argv`` in ``workdir`` in its own process group (``stop`` ends its workers too),
    logging to ``workdir/<name>.log``."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return kind(name, proc, port, log_path, env=env)


def wait_http(service: LocalService, path: str, timeout: float, error: type[Exception] = ServiceError) -> None:
    """Wait until ``GET path`` answers 200; raise ``error`` if the service exits or times out."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise error(f"{service.name} exited with code {service.process.returncode} while starting; "
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
    raise error(f"{service.name} did not answer {service.url}{path} within {timeout:.0f}s ({last}); "
                       f"see {service.log_path}")


def mlflow_binary() -> str:
    here = Path(sys.executable).parent / "mlflow"
    found = str(here) if here.exists() else shutil.which("mlflow")
    if not found:
        raise ServiceError("the mlflow command is not installed; install it with `pip install 'pipeline-plugin[mlflow-server]'`")
    return found


@contextmanager
def running(service: S, path: str, timeout: float, error: type[Exception] = ServiceError) -> Iterator[S]:
    """Yield ``service`` once ``GET path`` answers 200 (see :func:`wait_http`); stop it on exit."""
    try:
        wait_http(service, path, timeout, error)
        yield service
    finally:
        service.stop()


def mlflow_env(webhook_key: str) -> dict[str, str]:
    """This process's environment plus what lets MLflow deliver webhooks to loopback listeners,
    encrypting their secrets with ``webhook_key`` (a Fernet key)."""
    env = dict(os.environ)
    env.update(
        MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
        MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
        MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=webhook_key,
    )
    return env


def mlflow_argv(binary: str, workdir: Path, port: int) -> list[str]:
    """``mlflow server`` on 127.0.0.1:``port``, one worker, sqlite backend and artifacts under ``workdir``."""
    return [binary, "server", "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
            "--default-artifact-root", (workdir / "artifacts").as_uri(), "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]


def serve_argv(port: int, state_dir: Path, triggers: Path | None = None, config: Path | None = None) -> list[str]:
    """``pipeline-plugin serve`` on 127.0.0.1:``port`` with the Python that runs this."""
    argv = [sys.executable, "-m", "pipeline_plugin.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--state-dir", str(state_dir)]
    if triggers is not None:
        argv += ["--triggers", str(triggers)]
    if config is not None:
        argv += ["--config", str(config)]
    return argv


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
    env = mlflow_env(key_file.read_text().strip())
    env.pop("MLFLOW_TRACKING_URI", None)
    service = start("mlflow", mlflow_argv(mlflow_binary(), workdir, port), env, workdir, port)
    with running(service, "/health", timeout):
        yield service


@contextmanager
def serve(state_dir: Path, triggers: Path, config: Path, env: dict[str, str], workdir: Path,
          port: int | None = None, timeout: float = 60) -> Iterator[LocalService]:
    """``pipeline-plugin serve`` (listener + worker) as a child process."""
    port = port or free_port()
    service = start("serve", serve_argv(port, state_dir, triggers, config), {**os.environ, **env}, workdir, port)
    with running(service, "/healthz", timeout):
        yield service
