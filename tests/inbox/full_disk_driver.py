"""Run by tests/inbox/test_disk_full.py inside ``unshare -Urm`` (a private mount namespace, root
there): the state dir is a 4 MiB tmpfs that is then filled up. Prints what it saw as JSON."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.inbox import Inbox
from pipeline_plugin.sources.auth import sign

SECRET = "full-disk-secret"


def delivery(i: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "2026-11-25T03:26:08+00:00",
                       "data": {"name": "churn", "version": str(i), "source": f"models:/churn/{i}", "tags": {}}}).encode()
    did, ts = f"full-{i}", str(int(time.time()))
    return body, {"Content-Type": "application/json", "X-MLflow-Delivery-Id": did, "X-MLflow-Timestamp": ts,
                  "X-MLflow-Signature": sign(SECRET.encode(), did, ts, body)}


def main(top: Path) -> dict:
    disk = top / "disk"
    disk.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    state = disk / "state"
    inbox = Inbox(state)
    inbox.put("mlflow", [ModelVersionEvent.from_dict(dict(source="mlflow", kind="model_version.created", model="churn",
                                                          version="1", delivery_id="before"))])
    inbox.close()
    filler = disk / "filler"
    with open(filler, "wb") as fh:  # fill the disk up
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    out: dict = {"free": os.statvfs(disk).f_bavail}
    cli = [sys.executable, "-m", "pipeline_plugin.cli"]
    listed = subprocess.run(cli + ["events", "list", "--state-dir", str(state), "--json"], capture_output=True, text=True, check=False)
    out["list"] = {"exit": listed.returncode, "stdout": listed.stdout, "stderr": listed.stderr[-2000:]}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PIPELINE_PLUGIN_MLFLOW_SECRET": SECRET}
    env.pop("PIPELINE_PLUGIN_DATABASE_URL", None)
    log = open(top / "serve.log", "w")
    triggers = top / "triggers"  # no rules: the stored events start nothing
    triggers.mkdir()
    out["state_dir"] = str(state)
    serve = subprocess.Popen(cli + ["serve", "--state-dir", str(state), "--port", str(port), "--triggers", str(triggers)],
                             env=env, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and serve.poll() is None:
            try:
                health = httpx.get(url + "/healthz", timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        out["serve_exit"] = serve.poll()
        if health is None:
            return out
        out["health_full"] = {"status": health.status_code, "body": health.json()}
        body, headers = delivery(2)
        r = httpx.post(url + "/webhooks/mlflow", content=body, headers=headers, timeout=30)
        out["post_full"] = r.status_code
        time.sleep(5)  # the workers retry (about every 2 s) while the disk stays full
        filler.unlink()  # space again
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "inbox can store again" not in (top / "serve.log").read_text():
            time.sleep(0.2)  # the workers' next retry claims the pending event
        health = httpx.get(url + "/healthz", timeout=5)
        out["health_freed"] = {"status": health.status_code, "body": health.json()}
        r = httpx.post(url + "/webhooks/mlflow", content=body, headers=headers, timeout=30)
        out["post_freed"] = {"status": r.status_code, "body": r.json()}
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        log.close()
        out["serve_log"] = (top / "serve.log").read_text()[-20000:]
        subprocess.run(["umount", "-l", str(disk)], check=False)
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
