"""`pipeline-plugin serve` as users start it: bad rules or config stop it at start with exit code 2
and the message; --insecure-no-auth is loudly logged; SIGTERM stops it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx

from services import serve_process


def run_serve(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline_plugin.cli", "serve", "--port", "1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_a_rule_file_that_does_not_load_stops_serve_with_exit_2(tmp_path):
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "bad.yml").write_text("name: churn\nmatch:\n  modle: churn-*\n")
    out = run_serve("--state-dir", str(tmp_path / "s"), "--triggers", str(triggers))
    assert out.returncode == 2, out.stderr
    assert "bad.yml:3" in out.stderr and "did you mean 'model'" in out.stderr.lower()


def test_config_mistakes_and_missing_folders_exit_2(tmp_path):
    cfg = tmp_path / "listener.yml"
    cfg.write_text("sources:\n  mlflow:\n    secret_evn: X\n")
    out = run_serve("--state-dir", str(tmp_path / "s"), "--config", str(cfg))
    assert out.returncode == 2 and "secret_env" in out.stderr
    out = run_serve("--state-dir", str(tmp_path / "s"), "--triggers", str(tmp_path / "nope"))
    assert out.returncode == 2 and "is not a folder" in out.stderr
    out = run_serve("--state-dir", str(tmp_path / "s"), "--workers", "0")
    assert out.returncode == 2 and "--workers 0" in out.stderr


def test_sigterm_before_any_delivery_exits_0_without_a_traceback(tmp_path):
    # nothing was ever stored, so the loop's inbox writer was never made: shutdown must not need it
    with serve_process(tmp_path / "state", env={"PIPELINE_PLUGIN_MLFLOW_SECRET": "x"}) as serve:
        assert httpx.get(f"{serve.url}/healthz").status_code == 200
        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(timeout=30) == 0, serve.log()
    log = serve.log()
    assert "Traceback" not in log and "Error" not in log, log
    assert "Application shutdown complete" in log


def test_insecure_mode_is_loud_and_sigterm_stops_cleanly(tmp_path):
    with serve_process(tmp_path / "state", extra_args=["--insecure-no-auth"], env={"PIPELINE_PLUGIN_MLFLOW_SECRET": "x"}) as serve:
        r = httpx.post(
            f"{serve.url}/webhooks/huggingface",
            json={"event": {"action": "update", "scope": "repo.content"}, "repo": {"type": "model", "name": "acme/m", "headSha": "abc"}},
        )
        assert r.status_code < 500
        serve.process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught (exit by SIGTERM)
        assert serve.process.wait(timeout=30) in (0, -signal.SIGTERM)
    log = serve.log()
    assert "Application shutdown complete" in log and "worker stopped" in log
    assert "INSECURE" in log and "huggingface" in log
    assert "mlflow" not in log.split("INSECURE", 1)[1].split("\n", 1)[0]  # mlflow has a secret: not listed
