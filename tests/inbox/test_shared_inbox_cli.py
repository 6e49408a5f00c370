"""The shared inbox from outside `serve`: `events list|show --database-url` read it, and /healthz
says whether its database answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
from starlette.testclient import TestClient

from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.inbox.postgres import PostgresInbox
from pipeline_plugin.server import Listener, create_app


def event(version: str) -> ModelVersionEvent:
    return ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "churn",
                                        "version": version, "delivery_id": f"d-{version}"})


def test_events_list_and_show_read_the_shared_inbox(tmp_path, postgres_url):
    ids = PostgresInbox(postgres_url).put("mlflow", [event("1"), event("2")])
    cli = [sys.executable, "-m", "pipeline_plugin.cli", "events"]
    empty = str(tmp_path / "fresh-state")  # a runner of its own: nothing in its state dir
    listed = subprocess.run(cli + ["list", "--state-dir", empty, "--database-url", postgres_url, "--json"],
                            capture_output=True, text=True, check=False)
    assert listed.returncode == 0, listed.stderr
    assert [e["id"] for e in json.loads(listed.stdout)] == list(ids)
    shown = subprocess.run(cli + ["show", ids[1][:10], "--state-dir", empty, "--json"], capture_output=True, text=True,
                           check=False, env={**os.environ, "PIPELINE_PLUGIN_DATABASE_URL": postgres_url})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["version"] == "2"
    assert "s3cret" not in listed.stderr + shown.stderr


def test_healthz_says_whether_the_database_answers(tmp_path, postgres, postgres_url, monkeypatch):
    monkeypatch.setenv("PIPELINE_PLUGIN_DATABASE_URL", postgres_url)
    listener = Listener(tmp_path / "state", environ={}, start_worker=False)
    c = TestClient(create_app(listener), raise_server_exceptions=False)
    ok = c.get("/healthz")
    assert ok.status_code == 200, ok.text
    assert ok.json()["inbox"] == {"backend": "postgresql", "ok": True, "depth": 0}
    name = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres.url, autocommit=True) as admin:  # the database goes away
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            down = c.get("/healthz")
            assert down.status_code == 503
            body = down.json()
            assert body["status"] == "degraded" and body["inbox"]["backend"] == "postgresql"
            assert body["inbox"]["ok"] is False and "does not answer" in body["inbox"]["error"]
            assert "s3cret" not in down.text
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert c.get("/healthz").status_code == 200


def test_healthz_says_a_read_only_database_cannot_store(tmp_path, postgres, postgres_url, monkeypatch):
    monkeypatch.setenv("PIPELINE_PLUGIN_DATABASE_URL", postgres_url)
    listener = Listener(tmp_path / "state", environ={}, start_worker=False)
    c = TestClient(create_app(listener), raise_server_exceptions=False)
    assert c.get("/healthz").status_code == 200
    name = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            ro = c.get("/healthz")
            assert ro.status_code == 503 and "read-only" in ro.json()["inbox"]["error"], ro.text
        finally:
            admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    assert c.get("/healthz").status_code == 200
