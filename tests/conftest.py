"""Fixtures shared by every test folder. Real services are required, never skipped: a test that
needs Docker fails with the command that starts it when no daemon answers."""

from __future__ import annotations

import os
import socket

import pytest

from pipeline_plugin import settings


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    return unused_port()


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - turned into a failure with a fix
        pytest.fail(f"Docker Engine does not answer ({exc}); start it with `bash scripts/services.sh docker`")
    return client


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    """The local base image; built by `scripts/services.sh base-image` (setup does it)."""
    tag = settings.default_base_image()
    try:
        docker_client.images.get(tag)
    except Exception:  # noqa: BLE001
        pytest.fail(f"base image {tag} is missing; build it with `bash scripts/services.sh base-image`")
    return tag


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL cluster for the session (tests/services.py); missing PostgreSQL fails."""
    from tests.services import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres, request) -> str:
    """A fresh, empty PostgreSQL database for one test: ``postgresql://postgres:...@127.0.0.1:PORT/NAME``."""
    import re

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    return postgres.create_database(name)


@pytest.fixture(autouse=True)
def _environment_restored():
    """A command run in-process may change os.environ for the rest of its process (`--database-url`
    exports PIPELINE_PLUGIN_DATABASE_URL, as a CLI run should): each test gets back the environment
    it started with, so one test's database never becomes every later test's store."""
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(autouse=True)
def _no_leaked_mlflow_experiment(monkeypatch):
    """`mlflow.set_experiment` in a fixture exports MLFLOW_EXPERIMENT_ID into this process: every
    subprocess a later test starts (train.py, the demo, CI jobs) would then ask its own MLflow server
    for an experiment id of another server's. Each test starts without it."""
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
