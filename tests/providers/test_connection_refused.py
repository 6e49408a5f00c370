"""A CI service that refuses the connection is reported as a connection problem naming the URL it
tried (never as "did not find repository" or a 404-style fix), for every provider; and
``azure-pipelines`` names the same backend as ``azure-devops``."""

from __future__ import annotations

import socket

import pytest

from pipeline_plugin.errors import ServiceError
from pipeline_plugin.providers import canonical, get_provider

from .helpers import TOKEN, make_run


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the socket is: nothing listens there


def _setup(provider: str, base: str, monkeypatch) -> dict:
    if provider == "github":
        monkeypatch.setenv("GITHUB_API_URL", base)
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        return {"provider": "github", "repository": "acme/models", "workflow": "deploy-model.yml"}  # no ref: looks the repository up
    if provider == "gitlab":
        monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
        return {"provider": "gitlab", "project": "acme/models", "url": base}
    monkeypatch.setenv("AZURE_DEVOPS_EXT_PAT", TOKEN)
    return {"provider": "azure-devops", "organization": f"{base}/acme", "project": "models", "pipeline_id": 7}


@pytest.mark.parametrize("provider", ["github", "gitlab", "azure-devops", "azure-pipelines"])
def test_a_refused_connection_names_the_url(provider, monkeypatch):
    monkeypatch.setenv("PIPELINE_PLUGIN_HTTP_RETRIES", "1")
    port = closed_port()
    base = f"http://127.0.0.1:{port}"
    pipeline = _setup(canonical(provider), base, monkeypatch)
    with pytest.raises(ServiceError) as info:
        get_provider(provider).dispatch(make_run(pipeline))
    message = info.value.message
    assert message.startswith("cannot connect to "), message
    assert f"http://127.0.0.1:{port}/" in message, message
    assert "connection was refused" in message, message
    assert "did not find" not in message and "did not " not in message.split(".")[0], message
    assert info.value.exit_code == 3
    assert TOKEN not in message


def test_azure_pipelines_is_azure_devops():
    assert canonical("azure-pipelines") == "azure-devops" == canonical("azure-devops")
    assert type(get_provider("azure-pipelines")) is type(get_provider("azure-devops"))
