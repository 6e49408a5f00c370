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


@pytest.mark.docker
@pytest.mark.timeout(600)
def test_docker_target_promote_and_delete_from_other_state_dirs(postgres_url, docker_client, base_image, tmp_path, monkeypatch):
    """The docker target's record, containers and nginx are found by a job with another state dir."""
    import shutil

    from pipeline_plugin.targets.docker import DockerTarget

    app = Path(__file__).resolve().parent.parent / "targets" / "app"
    ctx = tmp_path / "image"
    ctx.mkdir()
    shutil.copy(app / "server.py", ctx / "server.py")
    (ctx / "Dockerfile").write_text(
        f"FROM {base_image}\nCOPY server.py /app/server.py\nUSER 10001\n"
        "LABEL io.pipeline-plugin.model.name=test-model io.pipeline-plugin.model.version=7\n"
        'ENV VERSION=7\nCMD ["python3", "/app/server.py"]\n'
    )
    tag = f"pp-store-test:{secrets.token_hex(3)}"
    docker_client.images.build(path=str(ctx), tag=tag, rm=True)
    service = f"d-{secrets.token_hex(3)}"
    sample = tmp_path / "sample.json"
    sample.write_text("[1]")
    monkeypatch.setenv("PIPELINE_PLUGIN_DATABASE_URL", postgres_url)
    # this job's own default folder differs from the deploying jobs': the recorded folder and scope win
    monkeypatch.setenv("PIPELINE_PLUGIN_PROXY_DIR", str(tmp_path / "elsewhere"))
    try:
        staged = run(tmp_path, postgres_url, "deploy", "deploy", "--name", service, "--env", "staging", "--target", "docker",
                     "--image", tag)
        run(tmp_path, postgres_url, "smoke", "smoke-test", "--url", staged["scoring_uri"], "--sample", str(sample),
            "--name", service, "--requests", "3")
        promoted = run(tmp_path, postgres_url, "promote", "promote", "--name", service, "--no-writeback", "--requests", "3")
        assert promoted["status"] == "promoted", promoted
        other = DockerTarget(state_dir=tmp_path / "jobs" / "cleanup")
        assert {d.env: d.status for d in other.list(service)} == {"production": "running", "staging": "running"}
    finally:
        for env in ("staging", "production"):
            DockerTarget(state_dir=tmp_path / "jobs" / "cleanup").delete(service, env)
        docker_client.images.remove(tag, force=True)
    left = docker_client.containers.list(all=True, filters={"label": f"io.pipeline-plugin.deployment.service={service}"})
    assert left == []
