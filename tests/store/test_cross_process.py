"""The point of the store: stages run as separate processes, each with its own empty state dir and
the same database URL (as CI jobs on different runners sharing PostgreSQL), see each other's
deployments, smoke tests and history: deploy -> smoke-test -> promote -> rollback -> status."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_plugin.targets.process import ProcessTarget
from tests.targets.test_process_target import package_dir

CLI = [sys.executable, "-m", "pipeline_plugin.cli"]


def run(tmp_path: Path, url: str, state: str, *args: str) -> dict:
    state_dir = tmp_path / "jobs" / state  # a fresh, empty state dir per job
    assert not state_dir.exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_PLUGIN_")}
    env["PIPELINE_PLUGIN_PROXY_DIR"] = str(tmp_path / "addresses")  # the host's folder of stable addresses
    done = subprocess.run(
        CLI + list(args) + ["--state-dir", str(state_dir), "--database-url", url, "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 0, f"{args[0]} exit {done.returncode}: {done.stderr[-3000:]}"
    assert "s3cret" not in done.stdout + done.stderr  # the database password is never printed
    return json.loads(done.stdout)


@pytest.mark.timeout(600)
def test_stages_in_separate_state_dirs_share_one_database(store_url, tmp_path, monkeypatch):
    service = f"x-{secrets.token_hex(3)}"
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps([1, 2]))
    pkgs = {v: package_dir(tmp_path / "workspace", v) for v in ("1", "2")}
    try:
        for n, version in enumerate(("1", "2")):
            staged = run(tmp_path, store_url, f"deploy-{n}", "deploy", "--name", service, "--env", "staging",
                         "--target", "process", "--image", str(pkgs[version]))
            assert staged["version"] == version
            checked = run(tmp_path, store_url, f"smoke-{n}", "smoke-test", "--url", staged["scoring_uri"],
                          "--sample", str(sample), "--name", service, "--requests", "3")
            assert checked["passed"] is True, checked
            promoted = run(tmp_path, store_url, f"promote-{n}", "promote", "--name", service, "--no-writeback",
                           "--requests", "3")
            assert promoted["status"] == "promoted", promoted
        back = run(tmp_path, store_url, "rollback", "rollback", "--name", service, "--no-writeback")
        assert back["status"] == "rolled-back", back
        status = run(tmp_path, store_url, "status", "status", "--name", service)
        prod, staging = status["environments"]["production"], status["environments"]["staging"]
        assert (prod["running"], prod["version"], staging["running"], staging["version"]) == (True, "1", True, "2"), status
        assert ("rollback", "succeeded", "1") in [(r["action"], r["status"], r["version"]) for r in status["history"]]
        monkeypatch.setenv("PIPELINE_PLUGIN_DATABASE_URL", store_url)
        monkeypatch.setenv("PIPELINE_PLUGIN_PROXY_DIR", str(tmp_path / "addresses"))
        target = ProcessTarget(state_dir=tmp_path / "jobs" / "cleanup")
        prod = target.get(service, "production")
        assert (prod.version, prod.status) == ("1", "running")  # rolled back, from a fifth state dir
        assert [h["deployment"]["version"] for h in target.history(service, "production")] == ["1", "2"]
    finally:
        monkeypatch.setenv("PIPELINE_PLUGIN_DATABASE_URL", store_url)
        monkeypatch.setenv("PIPELINE_PLUGIN_PROXY_DIR", str(tmp_path / "addresses"))
        for env in ("staging", "production"):
            ProcessTarget(state_dir=tmp_path / "jobs" / "cleanup").delete(service, env)
