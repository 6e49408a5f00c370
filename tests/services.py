"""Real services on loopback for tests: an MLflow 3.17.2 tracking server and Debian's docker-registry.

Both are context managers that start the real binary, wait until it answers and stop it (and its
children) on exit. A missing binary is a :class:`ServiceMissing` error with the command that
installs it: tests that need these services fail, they never skip.

    with mlflow_server(tmp_path) as mlflow:          # mlflow.url == "http://127.0.0.1:PORT"
        ...
    with docker_registry(tmp_path, notify_url="http://127.0.0.1:PORT/webhooks/docker-registry",
                         notify_token="t0ken") as registry:   # registry.host == "127.0.0.1:PORT"
        ...
"""

from __future__ import annotations

import os
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
from typing import Iterator

import yaml

REPO = Path(__file__).resolve().parent.parent
#: a fixed Fernet key (urlsafe base64 of 32 bytes): MLflow encrypts webhook secrets with it; without a
#: fixed key a multi-worker server silently drops deliveries (see shared/samples/README.md)
MLFLOW_WEBHOOK_KEY = "cGlwZWxpbmUtcGx1Z2luLXRlc3RzLWZlcm5ldC1rZXk="
DOCKER_REGISTRY_BIN = "/usr/bin/docker-registry"


class ServiceMissing(RuntimeError):
    """A real service the tests need is not installed or did not start."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_bin() -> Path:
    candidates = [Path(sys.executable).parent / "mlflow", REPO / ".venv" / "bin" / "mlflow"]
    for c in candidates:
        if c.exists():
            return c
    raise ServiceMissing(
        "the mlflow command is missing (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); install it with `.venv/bin/pip install mlflow==3.17.2` (or `make setup`)"
    )


@dataclass
class Service:
    """A started service: ``url`` (http://host:port), ``host`` (host:port), the process and its log."""

    name: str
    process: subprocess.Popen
    host: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)


def _start(name: str, argv: list[str], env: dict[str, str], workdir: Path, host: str) -> Service:
    log_path = workdir / f"{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    try:
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends workers too
        )
    finally:
        log.close()
    return Service(name=name, process=proc, host=host, log_path=log_path, env=env)


def _wait_http(service: Service, path: str, timeout: float, ok=lambda status: status < 500) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise ServiceMissing(
                f"{service.name} exited with code {service.process.returncode} while starting; log:\n"
                + service.log()[-3000:]
            )
        try:
            with urllib.request.urlopen(service.url + path, timeout=2) as resp:
                if ok(resp.status):
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            if ok(exc.code):
                return
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    service.stop()
    raise ServiceMissing(
        f"{service.name} did not answer {service.url}{path} within {timeout:.0f}s ({last}); log:\n"
        + service.log()[-3000:]
    )


@contextmanager
def mlflow_server(
    workdir: str | Path, port: int | None = None, webhook_secret_key: str | None = None, timeout: float = 120
) -> Iterator[Service]:
    """A real ``mlflow server`` (sqlite backend, local artifact root) on 127.0.0.1, able to deliver
    webhooks to loopback listeners. Yields a :class:`Service` with ``.url``."""
    workdir = Path(workdir) / "mlflow"
    workdir.mkdir(parents=True, exist_ok=True)
    binary = mlflow_bin()
    port = port or _free_port()
    env = dict(os.environ)
    env.update(
        MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
        MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
        MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=webhook_secret_key or MLFLOW_WEBHOOK_KEY,
        # the client half of these tests talks to this server, never to a remote one
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
    )
    env.pop("MLFLOW_REGISTRY_URI", None)
    argv = [
        str(binary),
        "server",
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--default-artifact-root",
        (workdir / "artifacts").as_uri(),  # a URI, as in production (s3://, file://)
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    service = _start("mlflow", argv, env, workdir, f"127.0.0.1:{port}")
    try:
        _wait_http(service, "/health", timeout, ok=lambda status: status == 200)
        yield service
    finally:
        service.stop()


def registry_config(port: int, root: Path, notify_url: str | None, notify_token: str | None) -> dict:
    """docker-registry (distribution 2.x) configuration, notifications as in
    shared/samples/docker-distribution/registry-config.yml."""
    config: dict = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "pipeline-plugin-tests"},
    }
    if notify_url:
        endpoint: dict = {
            "name": "pipeline-plugin",
            "url": notify_url,
            "timeout": "2s",
            "threshold": 5,
            "backoff": "1s",
            "ignoredmediatypes": ["application/octet-stream"],
        }
        if notify_token:
            endpoint["headers"] = {"Authorization": [f"Bearer {notify_token}"]}
        config["notifications"] = {"events": {"includereferences": True}, "endpoints": [endpoint]}
    return config


@contextmanager
def docker_registry(
    workdir: str | Path,
    notify_url: str | None = None,
    notify_token: str | None = None,
    port: int | None = None,
    timeout: float = 30,
) -> Iterator[Service]:
    """Debian's ``docker-registry`` on 127.0.0.1 with a generated config; ``.host`` is
    ``127.0.0.1:PORT`` (Docker Engine treats loopback registries as insecure-allowed)."""
    if not os.access(DOCKER_REGISTRY_BIN, os.X_OK):
        raise ServiceMissing(
            f"{DOCKER_REGISTRY_BIN} is missing; install it with `apt-get install docker-registry` (or `make setup`)"
        )
    workdir = Path(workdir) / "registry"
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    config_path = workdir / "config.yml"
    config_path.write_text(yaml.safe_dump(registry_config(port, workdir / "storage", notify_url, notify_token)))
    service = _start(
        "docker-registry", [DOCKER_REGISTRY_BIN, "serve", str(config_path)], dict(os.environ), workdir, f"127.0.0.1:{port}"
    )
    try:
        _wait_http(service, "/v2/", timeout, ok=lambda status: status == 200)
        yield service
    finally:
        service.stop()


# ---- the listener itself, as users run it ----------------------------------------------------------
@contextmanager
def serve_process(
    state_dir: str | Path,
    triggers: str | Path | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    timeout: float = 60,
) -> Iterator[Service]:
    """``pipeline-plugin serve`` as a subprocess on 127.0.0.1; ``.url`` is its base URL. Waits for
    ``GET /healthz``. ``stop()`` sends SIGTERM; tests that simulate a crash kill ``.process`` with
    SIGKILL themselves."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    argv = [
        sys.executable,
        "-m",
        "pipeline_plugin.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
    ]
    if triggers is not None:
        argv += ["--triggers", str(triggers)]
    argv += extra_args or []
    full_env = dict(os.environ)
    full_env.update(env or {})
    service = _start("serve", argv, full_env, state_dir.parent if state_dir.parent.exists() else state_dir, f"127.0.0.1:{port}")
    try:
        _wait_http(service, "/healthz", timeout, ok=lambda status: status == 200)
        yield service
    finally:
        service.stop()
