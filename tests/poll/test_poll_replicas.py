"""Two `serve` replicas on one PostgreSQL inbox, both with the same `poll:` section: one of them polls
(the inbox lease poll:oci), both show that poller in /metrics, and when it stops the other takes over."""

from __future__ import annotations

import time

import httpx
import pytest
import yaml

from pipeline_plugin.inbox.postgres import PostgresInbox
from tests.poll.registry_push import push
from tests.services import docker_registry, serve_process

pytestmark = pytest.mark.registry


def wait_for(check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not true within {timeout}s: {check}")


def test_one_poller_per_source_across_replicas(tmp_path, postgres_url):
    with docker_registry(tmp_path) as registry:
        push(registry.url, "models/churn", "v1", b"v1")
        config = tmp_path / "listener.yml"
        config.write_text(yaml.safe_dump({"poll": {"oci": {"registry": registry.url, "interval": 0.5}}}))
        inbox = PostgresInbox(postgres_url)
        env = {"PIPELINE_PLUGIN_DATABASE_URL": postgres_url}
        args = ["--no-worker", "--config", str(config)]
        with serve_process(tmp_path / "a", env=env, extra_args=args) as a, \
                serve_process(tmp_path / "b", env=env, extra_args=args) as b:
            wait_for(lambda: inbox.list())
            [lease] = wait_for(lambda: [x for x in inbox.leases() if x["name"] == "poll:oci"])
            holder, other = (a, b) if f":{a.process.pid}:" in lease["owner"] else (b, a)
            assert f":{holder.process.pid}:" in lease["owner"]
            for replica in (a, b):  # either replica's /metrics shows the poller that runs
                assert 'pipeline_plugin_poller_up{source="oci"} 1.0' in httpx.get(f"{replica.url}/metrics").text
            time.sleep(1.5)  # several intervals: the other replica asked for the lease and did not poll
            assert [x["owner"] for x in inbox.leases() if x["name"] == "poll:oci"] == [lease["owner"]]
            assert [e.event.version for e in inbox.list()] == ["v1"]

            holder.stop()  # SIGTERM: the lease is given up, the other replica takes over
            taken = wait_for(lambda: [x for x in inbox.leases()
                                      if x["name"] == "poll:oci" and f":{other.process.pid}:" in x["owner"]])
            assert taken
            push(registry.url, "models/churn", "v2", b"v2")
            wait_for(lambda: len(inbox.list()) == 2)
            # v1 existed before the first poll (baseline: ignored); the replica that took over took no baseline
            assert {e.event.version: e.status for e in inbox.list()} == {"v1": "ignored", "v2": "pending"}
