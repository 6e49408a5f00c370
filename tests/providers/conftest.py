"""Fixtures for provider tests: the contract server per service, fast retries."""

from __future__ import annotations

import os
import tempfile

import pytest

# the azure-devops SDK caches route discovery on disk at import time: keep it out of $HOME
os.environ.setdefault("AZURE_DEVOPS_CACHE_DIR", tempfile.mkdtemp(prefix="azdo-cache-"))

from .helpers import ContractServer, Contract, Reply

@pytest.fixture(autouse=True)
def fast_retries(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPELINE_PLUGIN_HTTP_BACKOFF", "0.01")
    monkeypatch.setenv("PIPELINE_PLUGIN_HTTP_RETRIES", "3")
    monkeypatch.setenv("PIPELINE_PLUGIN_HTTP_TIMEOUT", "5")
    for var in ("GITHUB_TOKEN", "GH_TOKEN", "GITHUB_APP_ID", "GITLAB_TOKEN", "CI_JOB_TOKEN", "AZURE_DEVOPS_EXT_PAT",
                "SYSTEM_ACCESSTOKEN", "GITHUB_ACTIONS", "GITLAB_CI", "TF_BUILD", "GITHUB_OUTPUT",
                "GITHUB_STEP_SUMMARY", "GITHUB_SERVER_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def serve():
    """serve(contracts, auth) -> a started ContractServer; every one is checked clean at the end."""
    started: list[ContractServer] = []

    def start(contracts: list[Contract], auth=None, unauthorized: Reply | None = None) -> ContractServer:
        server = ContractServer(contracts, auth=auth, unauthorized=unauthorized).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)
    for server in started:
        server.assert_clean()
