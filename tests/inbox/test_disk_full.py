"""Disk full: while the state dir's disk is full, `events list` reads the inbox, `serve` starts and
its /healthz says that it cannot store (503), deliveries get 503 (the sender retries), the workers
log one warning line (no traceback on each retry), and once there is space again all is back to
normal and the log says so. The disk is a 4 MiB tmpfs in a private mount
namespace (``unshare -Urm``: no root needed where user namespaces are allowed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def test_a_full_disk_keeps_reading_and_healthz_says_it_cannot_store(tmp_path):
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is missing: install util-linux"
    driver = Path(__file__).with_name("full_disk_driver.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([unshare, "-Urm", sys.executable, str(driver), str(tmp_path)], capture_output=True, text=True,
                          timeout=180, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["free"] == 0
    assert out["list"]["exit"] == 0, out["list"]
    assert [e["delivery_id"] for e in json.loads(out["list"]["stdout"])] == ["before"]
    assert out["serve_exit"] is None, out["serve_log"]
    full = out["health_full"]
    assert full["status"] == 503, full
    assert full["body"]["status"] == "degraded" and full["body"]["inbox"]["backend"] == "sqlite"
    assert full["body"]["inbox"]["ok"] is False and "full" in full["body"]["inbox"]["error"]
    assert out["post_full"] == 503  # not acknowledged: the sender retries
    assert out["health_freed"]["status"] == 200 and out["health_freed"]["body"]["inbox"]["ok"] is True
    assert out["post_freed"]["status"] == 200 and not out["post_freed"]["body"]["duplicate"]

    # the workers (two threads, each retrying about every 2 s for 5 s) said it once, plainly, and once that it recovered
    log = out["serve_log"]
    assert "Traceback" not in log, log
    lines = log.splitlines()
    full_at = [i for i, line in enumerate(lines) if f"inbox cannot store: disk full (state dir {out['state_dir']}); retrying" in line]
    assert len(full_at) == 1, log
    assert "WARNING" in lines[full_at[0]] and "free space there" in lines[full_at[0]]
    back_at = [i for i, line in enumerate(lines) if f"inbox can store again (state dir {out['state_dir']})" in line]
    assert len(back_at) == 1 and back_at[0] > full_at[0], log
    assert "disk full" in lines[back_at[0]]
