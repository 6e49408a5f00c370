"""``any_inbox``: each inbox test runs on SQLite (a state dir) and on PostgreSQL (a fresh database)."""

from __future__ import annotations

import pytest

from pipeline_plugin.inbox.select import open_inbox


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def any_inbox(backend, tmp_path, request):
    """``any_inbox(**kw)`` opens (another handle on) the test's inbox of the backend under test."""
    opened = []
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None

    def make(**kw):
        inbox = open_inbox(tmp_path / "state", database_url=url, **kw)
        opened.append(inbox)
        return inbox

    yield make
    for inbox in opened:
        inbox.close()
