"""`pipeline-plugin serve` runs its worker (rule matching, dispatch) in a child process, so that the
acknowledgements never wait for the worker's interpreter lock. As users run it: a crashed worker is
started again while deliveries are still stored and acknowledged, and the worker never outlives
its listener, however the listener ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services import serve_process, worker_pid, worker_ready

from pipeline_plugin.sources.auth import sign

SECRET = "worker-process-secret"
ENV = {"PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET}
RULES = "- name: record\n  match: {source: mlflow, model: 'churn-*'}\n"


def deliver(url: str, version: int) -> str:
    body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "2026-12-07T10:00:00+00:00",
                       "data": {"name": "churn-model", "version": str(version), "source": f"models:/m-{version}",
                                "tags": {}}}).encode()
    did, ts = f"worker-process-{version}", str(int(time.time()))
    r = httpx.post(f"{url}/webhooks/mlflow", content=body, timeout=10,
                   headers={"Content-Type": "application/json", "X-MLflow-Delivery-Id": did, "X-MLflow-Timestamp": ts,
                            "X-MLflow-Signature": sign(SECRET.encode(), did, ts, body)})
    assert r.status_code == 200, r.text
    return r.json()["stored"][0]


def status_of(state: Path, event_id: str, timeout: float = 30) -> str:
    """The event's status once the worker decided it (``pending`` if it did not within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run([sys.executable, "-m", "pipeline_plugin.cli", "events", "list", "--json",
                              "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        status = {e["id"]: e["status"] for e in json.loads(out.stdout)}.get(event_id, "missing")
        if status != "pending" or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def gone(pid: int) -> bool:
    """The process has exited (a zombie left for a parent that no longer reaps counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def triggers(tmp_path: Path) -> Path:
    folder = tmp_path / "triggers"
    folder.mkdir()
    (folder / "rules.yml").write_text(RULES)
    return folder


def test_a_crashed_worker_process_is_started_again_and_deliveries_are_still_acknowledged(tmp_path):
    state = tmp_path / "state"
    with serve_process(state, triggers(tmp_path), env=ENV) as serve:
        worker_ready(serve)
        first = worker_pid(serve.process.pid)
        assert first != serve.process.pid
        assert status_of(state, deliver(serve.url, 1)) == "matched"

        os.kill(first, signal.SIGKILL)
        assert wait_gone(first, 10)
        # while the worker is down: /healthz says so (503 names it), deliveries are stored and acknowledged
        down = httpx.get(f"{serve.url}/healthz", timeout=10)
        stored_meanwhile = deliver(serve.url, 2)
        assert down.status_code == 503 and down.json()["worker"] is False, down.text
        assert "worker process exited with status -9" in down.json()["detail"]

        deadline = time.monotonic() + 30
        while (health := httpx.get(f"{serve.url}/healthz", timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, health.text
            time.sleep(0.1)
        assert health.json()["worker"] is True
        second = worker_pid(serve.process.pid)
        assert second != first
        # the delivery stored while it was down, and one after, are both matched by the new worker
        assert status_of(state, stored_meanwhile) == "matched"
        assert status_of(state, deliver(serve.url, 3)) == "matched"
    log = serve.log()
    assert f"worker process {first} exited with status -9; starting it again" in log, log


def test_the_worker_process_stops_when_serve_is_killed(tmp_path):
    with serve_process(tmp_path / "state", triggers(tmp_path), env=ENV) as serve:
        worker_ready(serve)
        child = worker_pid(serve.process.pid)
        serve.process.kill()  # SIGKILL of the listener alone: no handler of it runs
        serve.process.wait(timeout=10)
        assert wait_gone(child, 15), "the worker process outlived its killed listener"


def test_sigterm_to_serve_stops_its_worker_process_and_exits_0(tmp_path):
    state = tmp_path / "state"
    with serve_process(state, triggers(tmp_path), env=ENV) as serve:
        worker_ready(serve)
        child = worker_pid(serve.process.pid)
        event = deliver(serve.url, 1)
        assert status_of(state, event) == "matched"
        started = time.monotonic()
        serve.process.send_signal(signal.SIGTERM)  # to serve only (a Kubernetes pod's PID 1), not its group
        assert serve.process.wait(timeout=30) == 0, serve.log_tail()
        assert time.monotonic() - started < 15
        assert gone(child)
    log = serve.log()
    assert f"worker stopped (process {child} exited with status 0)" in log, log
    assert "Traceback" not in log, log


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_the_worker_process_runs_at_a_lower_cpu_priority_which_worker_nice_sets(tmp_path):
    """On busy CPUs the acknowledgements go first: the worker process is niced 10 below serve by
    default; ``--worker-nice 0`` keeps it level; a value outside 0-19 stops serve with exit 2."""
    rules = triggers(tmp_path)
    for extra, lower in (([], 10), (["--worker-nice", "0"], 0), (["--worker-nice", "3"], 3)):
        state = tmp_path / f"state-{lower}"
        with serve_process(state, rules, env=ENV, extra_args=extra) as serve:
            worker_ready(serve)
            child = worker_pid(serve.process.pid)
            assert niceness(child) == min(19, niceness(serve.process.pid) + lower), extra
            assert status_of(state, deliver(serve.url, 1)) == "matched"
    bad = subprocess.run([sys.executable, "-m", "pipeline_plugin.cli", "serve", "--state-dir", str(tmp_path / "bad"),
                          "--worker-nice", "25"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2, bad.stderr
    assert "--worker-nice 25" in bad.stderr and "0" in bad.stderr and "19" in bad.stderr, bad.stderr
