"""``any_inbox``: each inbox test runs on SQLite (a state dir) and on PostgreSQL (a fresh database)."""

from __future__ import annotations

import pytest

from pipeline_plugin.inbox import Inbox


@pytest.fixture(params=["sqlite"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def any_inbox(backend, tmp_path, request):
    """``any_inbox(**kw)`` opens (another handle on) the test's inbox of the backend under test."""
    opened = []

    def make(**kw):
        inbox = Inbox(tmp_path / "state", **kw)
        opened.append(inbox)
        return inbox

    yield make
    for inbox in opened:
        inbox.close()
