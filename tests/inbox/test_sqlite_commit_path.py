"""The SQLite inbox's writer thread (what ``serve``'s worker process, the pollers and the CLI commands
write through) lets other writers in while it waits for the disk: it commits, lets the write lock
go, then flushes the WAL, and answers only after the flush."""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest

from pipeline_plugin.errors import ServiceError
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.inbox import Inbox
from pipeline_plugin.inbox import sqlite_writer


def ev(version: int) -> ModelVersionEvent:
    return ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "churn",
                                        "version": str(version), "delivery_id": f"d-{version}",
                                        "registry": {"tracking_uri": "http://mlflow:5000"}})


def test_a_commit_lets_other_writers_in_while_it_waits_for_its_flush_and_answers_after_it(tmp_path, monkeypatch):
    inbox = Inbox(tmp_path / "state")
    inbox.put("mlflow", [ev(1)])  # the file and its WAL exist
    gate, entered, real = threading.Event(), threading.Event(), os.fdatasync

    def held(fd: int) -> None:
        entered.set()
        assert gate.wait(30), "the test never opened the gate"
        real(fd)

    monkeypatch.setattr(sqlite_writer.os, "fdatasync", held)
    future = inbox.submit_put("mlflow", [ev(2)])
    assert entered.wait(30), "the commit never flushed the WAL itself"
    # committed and waiting for the disk: another process can take the write lock at once
    other = sqlite3.connect(inbox.path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 2
        other.execute("COMMIT")
    finally:
        other.close()
    assert not future.done(), "answered before the WAL was on disk"
    gate.set()
    assert len(future.result(30)) == 1 and not future.result().duplicate
    inbox.close()


def test_a_failed_flush_is_an_error_for_the_caller_and_the_retry_finds_the_delivery_stored(tmp_path, monkeypatch):
    inbox = Inbox(tmp_path / "state")
    inbox.put("mlflow", [ev(1)])
    real = os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sqlite_writer.os, "fdatasync", failing)
    with pytest.raises(ServiceError) as err:
        inbox.put("mlflow", [ev(2)])
    assert "flush" in str(err.value) and "inbox.sqlite3-wal" in str(err.value) and "send it again" in str(err.value)
    monkeypatch.setattr(sqlite_writer.os, "fdatasync", real)
    again = inbox.put("mlflow", [ev(2)])  # the sender's retry
    assert again.duplicate and len(again) == 1  # committed before the failed flush: stored once
    inbox.close()
