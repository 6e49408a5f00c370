"""Commands other than `serve` and `events` read the shared inbox too: `rules explain` answers
`version: latest` from it on a runner with a fresh state dir, and the demo follows its version there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_plugin.errors import StageFailed
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.inbox.postgres import PostgresInbox

CLI = [str(Path(sys.executable).with_name("pipeline-plugin"))]


def event(version: str) -> ModelVersionEvent:
    return ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "churn",
                                        "version": version, "delivery_id": f"d-{version}",
                                        "registry": {"tracking_uri": "http://mlflow.internal:5000"}})


def explain(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "rules", "explain", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, check=False)


def test_rules_explain_answers_latest_from_the_shared_inbox(tmp_path, postgres_url):
    PostgresInbox(postgres_url).put("mlflow", [event("5"), event("3")])  # stored by a `serve` replica elsewhere
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "latest.yml").write_text("name: newest-only\nmatch: {version: latest}\n")
    ev = tmp_path / "event.json"
    ev.write_text(json.dumps(event("3").to_dict()))
    fresh = tmp_path / "fresh-state"  # this runner's own state dir: it does not even exist
    base = ["--triggers", str(triggers), "--event", str(ev), "--json"]
    env = {"PIPELINE_PLUGIN_DATABASE_URL": ""}

    by_flag = explain(*base, "--state-dir", str(fresh), "--database-url", postgres_url, env=env)
    assert by_flag.returncode == 0, by_flag.stderr
    (only,) = json.loads(by_flag.stdout)["results"]
    assert only["matched"] is False
    assert only["reason"] == "version '3' is not the latest of model 'churn' (latest is '5')"

    by_env = explain(*base, "--state-dir", str(fresh), env={"PIPELINE_PLUGIN_DATABASE_URL": postgres_url})
    assert by_env.returncode == 0, by_env.stderr
    assert json.loads(by_env.stdout)["matched"] == []
    flag_only = explain(*base, "--database-url", postgres_url, env=env)  # no --state-dir at all
    assert flag_only.returncode == 0, flag_only.stderr
    assert json.loads(flag_only.stdout)["matched"] == []
    assert not fresh.exists()  # nothing was created on this runner
    password = postgres_url.split("@")[0].rsplit(":", 1)[1]
    assert password not in by_flag.stdout + by_flag.stderr + by_env.stderr + flag_only.stderr

    # a database URL that holds no shared inbox, and no state dir: a usage error naming the flag
    sqlite = explain(*base, "--database-url", f"sqlite:///{tmp_path / 'h.sqlite'}", env=env)
    assert sqlite.returncode == 2 and "--database-url" in sqlite.stderr and "postgresql://" in sqlite.stderr


def test_demo_follows_its_version_in_the_shared_inbox(tmp_path, postgres_url, monkeypatch):
    from pipeline_plugin.commands.demo import follow

    inbox = PostgresInbox(postgres_url)
    (event_id,) = inbox.put("mlflow", [event("7")])
    inbox.set_outcome(event_id, "unmatched", "no rule matched")
    monkeypatch.setenv("PIPELINE_PLUGIN_DATABASE_URL", postgres_url)
    said: list[str] = []
    with pytest.raises(StageFailed, match=f"event {event_id} matched no rule"):
        follow(tmp_path / "state", "churn", "7", timeout=60, say=said.append)
    assert any(f"event {event_id}" in line and "stored in the inbox" in line for line in said)
