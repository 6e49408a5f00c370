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

import contextlib
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

from pipeline_plugin import demo_services
from pipeline_plugin.demo_services import LocalService, mlflow_argv, mlflow_env, running, serve_argv

REPO = Path(__file__).resolve().parent.parent
#: a fixed Fernet key (urlsafe base64 of 32 bytes): MLflow encrypts webhook secrets with it; without a
#: fixed key a multi-worker server silently drops deliveries (see tests/sources/samples/README.md)
MLFLOW_WEBHOOK_KEY = "cGlwZWxpbmUtcGx1Z2luLXRlc3RzLWZlcm5ldC1rZXk="
DOCKER_REGISTRY_BIN = "/usr/bin/docker-registry"


class ServiceMissing(RuntimeError):
    """A real service the tests need is not installed or did not start."""


_free_port = demo_services.free_port


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
class Service(LocalService):
    """A started service (:class:`pipeline_plugin.demo_services.LocalService`): ``url``
    (http://host:port), ``host`` (host:port), the process, its environment and its log."""

    stop_timeout: float = 10

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


def _start(name: str, argv: list[str], env: dict[str, str], workdir: Path, port: int) -> Service:
    return demo_services.start(name, argv, env, workdir, port, kind=Service)


def _running(service: Service, path: str, timeout: float):
    """Yield ``service`` once ``GET path`` answers 200; :class:`ServiceMissing` when it does not."""
    return running(service, path, timeout, error=ServiceMissing)


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
    env = mlflow_env(webhook_secret_key or MLFLOW_WEBHOOK_KEY)
    # the client half of these tests talks to this server, never to a remote one
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
    env.pop("MLFLOW_REGISTRY_URI", None)
    service = _start("mlflow", mlflow_argv(str(binary), workdir, port), env, workdir, port)
    with _running(service, "/health", timeout):
        yield service


def registry_config(port: int, root: Path, notify_url: str | None, notify_token: str | None) -> dict:
    """docker-registry (distribution 2.x) configuration, notifications as in
    tests/sources/samples/docker-distribution/registry-config.yml."""
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
    service = _start("docker-registry", [DOCKER_REGISTRY_BIN, "serve", str(config_path)], dict(os.environ), workdir, port)
    with _running(service, "/v2/", timeout):
        yield service


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
    argv = serve_argv(port, state_dir, None if triggers is None else Path(triggers)) + (extra_args or [])
    full_env = dict(os.environ)
    full_env.update(env or {})
    service = _start("serve", argv, full_env, state_dir.parent if state_dir.parent.exists() else state_dir, port)
    with _running(service, "/healthz", timeout):
        yield service


def worker_ready(service: Service, timeout: float = 60) -> None:
    """Wait until the worker process of ``serve`` logged that its workers run (``serve`` answers
    ``/healthz`` before that: deliveries are stored while the worker starts)."""
    deadline = time.monotonic() + timeout
    while "started with" not in service.log():
        if time.monotonic() > deadline or service.process.poll() is not None:
            raise AssertionError(f"the worker of serve did not start within {timeout}s: {service.log_tail()}")
        time.sleep(0.05)


def worker_pid(serve_pid: int, timeout: float = 30) -> int:
    """The pid of the worker process that ``serve`` (pid ``serve_pid``) started (its only child),
    waiting up to ``timeout`` seconds for it."""
    deadline = time.monotonic() + timeout
    while True:
        children = []
        for task in Path(f"/proc/{serve_pid}/task").iterdir():
            with contextlib.suppress(OSError):
                children += [int(pid) for pid in (task / "children").read_text().split()]
        if len(children) == 1:
            return children[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"serve {serve_pid} has children {children}, expected one worker process")
        time.sleep(0.05)


@contextmanager
def sagemaker_api(workdir: str | Path, timeout: float = 60) -> Iterator[Service]:
    """A local HTTP server speaking the SageMaker API (moto's server, from the test extras) on
    127.0.0.1: SageMaker itself cannot run here, so boto3's real requests go to this stand-in,
    as the CI providers' SDKs go to tests/contract_server.py. Yields a :class:`Service`."""
    workdir = Path(workdir) / "sagemaker"
    workdir.mkdir(parents=True, exist_ok=True)
    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        raise ServiceMissing(f"{binary} is missing; install the test extras: pip install -e '.[test]'")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    service = _start("sagemaker-api", [str(binary), "-H", "127.0.0.1", "-p", str(port)], env, workdir, port)
    with _running(service, "/moto-api/", timeout):
        yield service


# ---- PostgreSQL (the shared store of CI jobs on different runners) -------------------------------
POSTGRES_PASSWORD = "pp-test-s3cret"  # a test cluster on loopback; never printed by pipeline-plugin


@dataclass
class Postgres:
    """A running PostgreSQL cluster (Debian's ``postgresql``) on 127.0.0.1: ``url`` is its
    ``postgres`` database; :meth:`create_database` gives a fresh one."""

    port: int
    data_dir: Path
    bin_dir: Path

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres:{POSTGRES_PASSWORD}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)


def postgres_bin_dir() -> Path:
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise ServiceMissing(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); install it with "
            "`apt-get install postgresql` (or `make setup`)"
        )
    return Path(found[-1]).parent


@contextmanager
def postgres_server(timeout: float = 60) -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster: ``initdb`` + ``pg_ctl`` in a temp dir on a free port, as the
    ``postgres`` user when run as root (PostgreSQL refuses root), password auth on TCP only."""
    import shutil
    import subprocess
    import tempfile

    bin_dir = postgres_bin_dir()
    as_user: list[str] = []
    top = Path(tempfile.mkdtemp(prefix="pipeline-plugin-pg-"))
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(top, "postgres", "postgres")
    data = top / "data"
    pwfile = top / "pw"
    port = _free_port()

    def run(argv: list[str]) -> None:
        done = subprocess.run(as_user + argv, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise ServiceMissing(f"{' '.join(argv[:2])} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")

    try:
        pwfile.write_text(POSTGRES_PASSWORD + "\n")
        if as_user:
            shutil.chown(pwfile, "postgres", "postgres")
        run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
             f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"])
        opts = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c max_connections=200"
        run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(top / "log"), "-w", "-t", str(int(timeout)), "-o", opts, "start"])
        try:
            yield Postgres(port=port, data_dir=data, bin_dir=bin_dir)
        finally:
            subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=60)
    finally:
        shutil.rmtree(top, ignore_errors=True)
