"""Polling a real docker-registry (Debian's, the CNCF distribution) for tags and digests, and a registry
that is down: retried with backoff, the error shown by /metrics and `events pollers`, polled again
once it is up."""

from __future__ import annotations

import json
import threading
import time

import pytest

from pipeline_plugin.cli import main
from pipeline_plugin.inbox import Inbox
from pipeline_plugin.metrics import Metrics
from pipeline_plugin.poll import build, parse_source
from pipeline_plugin.poll.runner import Runner
from pipeline_plugin.poll.service import PollerThread
from tests.poll.registry_push import push
from tests.services import _free_port, docker_registry

pytestmark = pytest.mark.registry


def poll(capsys, state, *args):
    capsys.readouterr()
    code = main(["poll", "--source", "oci", "--once", "--json", "--state-dir", str(state), *args])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_tags_and_digests_of_a_real_registry(tmp_path, capsys):
    with docker_registry(tmp_path) as registry:
        digests = {tag: push(registry.url, "models/churn", tag, tag.encode()) for tag in ("v1", "v2")}
        state = tmp_path / "state"
        code, summary, err = poll(capsys, state, "--option", f"registry={registry.url}")
        assert code == 0, err
        # the first poll of the registry is a baseline: the tags are stored, ignored (no pipeline starts)
        assert summary["sources"]["oci"] | {"error": None} == {"seen": 2, "new": 0, "duplicate": 0, "skipped": 0,
                                                              "baseline": 2, "errors": 0, "error": None}
        assert {e.status for e in Inbox(state).list()} == {"ignored"}
        events = {e.event.version: e.event for e in Inbox(state).list()}
        assert {v: e.digest for v, e in events.items()} == digests
        assert events["v1"].source == "docker-registry" and events["v1"].kind == "image.pushed"
        assert events["v1"].image_uri == f"{registry.host}/models/churn:v1"
        assert dict(events["v1"].registry) == {"host": registry.host, "repository": "models/churn"}

        # while nobody polls: a new tag, and v1 moved to another image; the listed repository only
        digests["v3"] = push(registry.url, "models/churn", "v3", b"v3")
        moved = push(registry.url, "models/churn", "v1", b"v1 rebuilt")
        push(registry.url, "other/repo", "latest", b"other")
        code, summary, err = poll(capsys, state, "--option", f"registry={registry.url}",
                                  "--option", "repositories=[models/churn]", "--option", "host=registry.example:5000")
        assert code == 0, err
        counts = summary["sources"]["oci"]
        # another host name is another registry identity (the same registry polled: no baseline): all three
        # tags are new under it
        assert (counts["seen"], counts["new"], counts["baseline"]) == (3, 3, 0)
        code, summary, err = poll(capsys, state, "--option", f"registry={registry.url}",
                                  "--option", "repositories=[models/churn]")
        counts = summary["sources"]["oci"]
        assert (counts["seen"], counts["new"], counts["duplicate"]) == (3, 2, 1)  # v3 and the moved v1 are new
        pushed = [(e.event.version, e.event.digest) for e in Inbox(state).list()
                  if e.event.registry["host"] == registry.host]
        assert sorted(pushed) == sorted([("v1", digests["v1"]), ("v2", digests["v2"]), ("v3", digests["v3"]),
                                         ("v1", moved)])


def test_a_registry_that_is_down_is_retried_with_backoff_and_shown(tmp_path, capsys):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    state = tmp_path / "state"
    code, summary, err = poll(capsys, state, "--option", f"registry={url}")
    assert code == 3 and summary["ok"] is False
    assert summary["sources"]["oci"]["errors"] == 1 and "no answer for GET /v2/_catalog" in summary["sources"]["oci"]["error"]

    settings = parse_source("oci", {"registry": url, "interval": 0.2, "max_backoff": 0.8}, "poll.oci")
    runner = Runner(build(settings), Inbox(state), settings, progress=lambda m: None)
    delays = []
    for _ in range(4):
        runner.poll_once()
        delays.append(runner.delay())
    assert delays == [0.2, 0.4, 0.8, 0.8]  # doubling from min(interval, 5) up to max_backoff
    assert runner.health["state"] == "error" and runner.health["consecutive_errors"] == 4

    inbox = Inbox(state)
    poller = PollerThread(inbox, settings, "replica-a")
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,), daemon=True)
    thread.start()
    try:
        def status():
            found = [lease["status"] for lease in inbox.leases() if lease["name"] == "poll:oci"]
            return found[0] if found else {}

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (status().get("consecutive_errors") or 0) < 2:
            time.sleep(0.1)
        assert status()["state"] == "error" and "no answer" in status()["last_error"]
        metrics = Metrics(inbox).render().decode()
        assert 'pipeline_plugin_poller_up{source="oci"} 0.0' in metrics
        assert "no answer for GET /v2/_catalog" in metrics
        capsys.readouterr()
        assert main(["events", "pollers", "--state-dir", str(state)]) == 0
        shown = capsys.readouterr().out
        assert "oci" in shown and "error" in shown and "no answer for GET /v2/_catalog" in shown
        # a second replica does not poll while the first holds the lease
        assert inbox.try_lease("poll:oci", "replica-b", 5) is False

        with docker_registry(tmp_path, port=port) as registry:
            digest = push(registry.url, "models/churn", "v1", b"v1")
            while time.monotonic() < deadline + 30 and not inbox.list():  # (an empty registry may be polled first)
                time.sleep(0.1)
            assert status()["state"] == "ok" and status()["consecutive_errors"] == 0
            assert [(e.event.version, e.event.digest) for e in inbox.list()] == [("v1", digest)]
            assert 'pipeline_plugin_poller_up{source="oci"} 1.0' in Metrics(inbox).render().decode()
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not inbox.leases()  # released on stop: another replica may poll at once


def test_a_pushed_image_notified_and_polled_is_one_event(tmp_path, capsys):
    """The registry's own notification reaches a running `serve`; polling the same registry later
    stores nothing new (same host name from sources.docker-registry.options.host)."""
    import yaml

    from tests.services import serve_process

    port = _free_port()
    host = f"127.0.0.1:{port}"
    config = tmp_path / "listener.yml"
    config.write_text(yaml.safe_dump({"sources": {"docker-registry": {"options": {"host": host}}},
                                      "poll": {"oci": {"registry": f"http://{host}", "repositories": ["models/churn"]}}}))
    listener = tmp_path / "serve.yml"  # the webhook side only: this serve does not poll
    listener.write_text(yaml.safe_dump({"sources": {"docker-registry": {"options": {"host": host}}}}))
    state = tmp_path / "state"
    token = "registry-notify-token"
    with serve_process(state, env={"PIPELINE_PLUGIN_DOCKER_REGISTRY_SECRET": token},
                       extra_args=["--no-worker", "--config", str(listener)]) as serve:
        with docker_registry(tmp_path, notify_url=f"{serve.url}/webhooks/docker-registry", notify_token=token,
                             port=port) as registry:
            digest = push(registry.url, "models/churn", "v1", b"v1")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not Inbox(state).list():
                time.sleep(0.2)
            [notified] = Inbox(state).list()
            assert (notified.event.version, notified.event.digest) == ("v1", digest)
            assert not notified.event.delivery_id.startswith("poll:")
            capsys.readouterr()
            assert main(["poll", "--once", "--json", "--config", str(config), "--state-dir", str(state)]) == 0
            counts = json.loads(capsys.readouterr().out)["sources"]["oci"]
            assert (counts["seen"], counts["new"], counts["duplicate"]) == (1, 0, 1)
            assert [e.id for e in Inbox(state).list()] == [notified.id]


def test_poll_without_once_keeps_polling_under_the_lease(tmp_path):
    """`pipeline-plugin poll` as a long-running process: it holds the lease poll:oci (shown by
    `events pollers`), stores a tag pushed while it runs, and stops on SIGINT."""
    import os
    import signal
    import subprocess
    import sys

    with docker_registry(tmp_path) as registry:
        push(registry.url, "models/churn", "v1", b"v1")
        state = tmp_path / "state"
        proc = subprocess.Popen([sys.executable, "-m", "pipeline_plugin.cli", "poll", "--source", "oci",
                                 "--interval", "0.3", "--option", f"registry={registry.url}", "--state-dir", str(state)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (state / "inbox.sqlite3").exists():
                time.sleep(0.2)
            inbox = Inbox(state)
            while time.monotonic() < deadline and not inbox.list():
                time.sleep(0.2)
            push(registry.url, "models/churn", "v2", b"v2")
            while time.monotonic() < deadline and len(inbox.list()) < 2:
                time.sleep(0.2)
            assert sorted(e.event.version for e in inbox.list()) == ["v1", "v2"]
            [lease] = [x for x in inbox.leases() if x["name"] == "poll:oci"]
            # v1 was there before polling started: baseline (ignored); v2 pushed while it runs: new
            assert lease["status"]["state"] == "ok" and lease["status"]["new"] == 1 and lease["status"]["baseline"] == 1
            assert {e.event.version: e.status for e in inbox.list()} == {"v1": "ignored", "v2": "pending"}
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "oci: new image.pushed models/churn version v2" in err
        assert not inbox.leases(), err  # given up on the way out
