"""The worker: rules matched against stored events, one run per (event, rule), dispatched once even
across restarts; test deliveries and write-back echoes ignored; replay; the events command."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pipeline_plugin import cli
from pipeline_plugin.errors import ServiceError
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.inbox import Inbox, run_id_for
from pipeline_plugin.providers import DispatchResult
from pipeline_plugin.rules import load_rules
from pipeline_plugin.worker import Worker

RULES = """
- name: churn-candidates
  match:
    source: mlflow
    kind: model_version.created
    model: "churn-*"
    version: ">=2"
    tags: {stage_hint: candidate}
  pipeline:
    provider: github
    repository: acme/churn
    workflow: deploy.yml
- name: churn-record-only
  match:
    kind: model_version.created
    model: "churn-*"
- name: newest-fraud
  match:
    model: fraud
    version: latest
  pipeline:
    provider: gitlab
    project: acme/fraud
"""


class CountingProvider:
    """Stands in for a CI service: counts dispatches per run id (the worker's contract is that each
    run id is dispatched once), answers with a URL, or raises."""

    def __init__(self, name: str, idempotent: bool = False, fail_times: int = 0) -> None:
        self.name = name
        self.idempotent = idempotent
        self.fail_times = fail_times
        self.calls: list[str] = []

    def dispatch(self, run):
        self.calls.append(run.run_id)
        if self.fail_times:
            self.fail_times -= 1
            raise ServiceError(f"{self.name} answered 503")
        return DispatchResult(self.name, "dispatched", url=f"https://ci.example/{self.name}/{run.run_id}", external_id="42")


@pytest.fixture
def triggers(tmp_path) -> Path:
    d = tmp_path / "triggers"
    d.mkdir()
    (d / "rules.yml").write_text(textwrap.dedent(RULES))
    return d


def make_worker(state, triggers, providers):
    inbox = Inbox(state)
    return inbox, Worker(inbox, load_rules(triggers), triggers, get_provider=lambda name: providers[name])


def ev(model="churn-model", version="3", **kw) -> ModelVersionEvent:
    data = dict(
        source="mlflow",
        kind="model_version.created",
        model=model,
        version=version,
        delivery_id=f"d-{model}-{version}-{kw.get('kind', 'c')}",
        tags={"stage_hint": "candidate"},
        registry={"tracking_uri": "http://mlflow:5000"},
    )
    data.update(kw)
    return ModelVersionEvent.from_dict(data)


def test_matched_rules_get_one_run_each_with_the_result_url(tmp_path, triggers):
    gh = CountingProvider("github")
    inbox, worker = make_worker(tmp_path / "state", triggers, {"github": gh})
    [eid] = inbox.put("mlflow", [ev()])
    assert worker.drain() == 1
    stored = inbox.get(eid)
    assert stored.status == "matched"
    assert stored.rules == ["churn-candidates", "churn-record-only"]
    [run] = stored.runs  # the record-only rule records the match and starts nothing
    assert run.run_id == run_id_for(eid, "churn-candidates")
    assert gh.calls == [run.run_id]
    assert run.status == "dispatched" and run.url == f"https://ci.example/github/{run.run_id}"
    assert run.pipeline["repository"] == "acme/churn"
    assert worker.drain() == 0 and gh.calls == [run.run_id]


def test_unmatched_test_and_writeback_events(tmp_path, triggers):
    gh = CountingProvider("github")
    inbox, worker = make_worker(tmp_path / "state", triggers, {"github": gh})
    ids = inbox.put(
        "mlflow",
        [
            ev(model="other"),
            ev(model="churn-model", version="4", is_test=True),
            ev(kind="alias.set", alias="production", version="3"),
            ev(kind="tag.set", tags={"pipeline_plugin.status": "deployed"}),
        ],
    )
    worker.drain()
    got = {i: inbox.get(i) for i in ids}
    assert got[ids[0]].status == "unmatched" and "no rule matched" in got[ids[0]].reason
    assert got[ids[1]].status == "ignored" and "test" in got[ids[1]].reason
    assert got[ids[2]].status == "ignored" and "write-back" in got[ids[2]].reason
    assert got[ids[3]].status == "ignored"
    assert gh.calls == [] and inbox.runs() == []


def test_version_latest_uses_versions_seen(tmp_path, triggers):
    gl = CountingProvider("gitlab")
    inbox, worker = make_worker(tmp_path / "state", triggers, {"gitlab": gl})
    newer, older = inbox.put("mlflow", [ev("fraud", "10", tags={}), ev("fraud", "9", tags={})])
    worker.drain()
    assert inbox.get(newer).status == "matched"
    assert inbox.get(older).status == "unmatched"  # 9 arrived after 10: not the latest
    assert len(gl.calls) == 1


def test_restart_mid_dispatch_never_dispatches_a_non_idempotent_run_twice(tmp_path, triggers):
    gh = CountingProvider("github")
    inbox, worker = make_worker(tmp_path / "state", triggers, {"github": gh})
    [eid] = inbox.put("mlflow", [ev()])
    # the process died between "dispatching" (committed) and the result: replay that state
    [claimed] = inbox.claim(worker.owner)
    [run] = inbox.record_runs(eid, 0, [{"rule_name": "churn-candidates", "provider": "github"}], status="matched",
                              rules=["churn-candidates", "churn-record-only"])
    inbox.mark_dispatching(run.run_id)
    inbox.retire_owner(worker.owner)  # the old worker is gone
    _, restarted = make_worker(tmp_path / "state", triggers, {"github": gh})
    assert restarted.drain() == 1
    [after] = inbox.get(eid).runs
    assert gh.calls == []  # not dispatched again: it may have started
    assert after.status == "unknown" and "events replay" in after.detail


def test_restart_mid_dispatch_retries_an_idempotent_provider_once(tmp_path, triggers):
    gh = CountingProvider("github", idempotent=True)
    inbox, worker = make_worker(tmp_path / "state", triggers, {"github": gh})
    [eid] = inbox.put("mlflow", [ev()])
    inbox.claim(worker.owner)
    [run] = inbox.record_runs(eid, 0, [{"rule_name": "churn-candidates", "provider": "github"}], status="matched",
                              rules=["churn-candidates"])
    inbox.mark_dispatching(run.run_id)
    inbox.retire_owner(worker.owner)
    _, restarted = make_worker(tmp_path / "state", triggers, {"github": gh})
    restarted.drain()
    assert gh.calls == [run.run_id]
    assert inbox.get(eid).runs[0].status == "dispatched"
    # the matching decision was kept, not redone
    assert inbox.get(eid).rules == ["churn-candidates"]


def test_dispatch_errors_retry_idempotent_providers_then_dead_letter(tmp_path, triggers):
    gh = CountingProvider("github", idempotent=True, fail_times=1)
    inbox = Inbox(tmp_path / "state", max_attempts=2)
    worker = Worker(inbox, load_rules(triggers), triggers, get_provider=lambda n: gh)
    [eid] = inbox.put("mlflow", [ev()])
    worker.drain()
    assert inbox.get(eid).runs[0].status == "error"
    inbox._db().execute("UPDATE events SET next_attempt_at=0")  # skip the backoff wait
    worker.drain()
    [run] = inbox.get(eid).runs
    assert run.status == "dispatched" and len(gh.calls) == 2 and len(set(gh.calls)) == 1

    always = CountingProvider("github", idempotent=True, fail_times=99)
    worker = Worker(inbox, load_rules(triggers), triggers, get_provider=lambda n: always)
    [eid2] = inbox.put("mlflow", [ev(version="5")])
    for _ in range(3):
        worker.drain()
        inbox._db().execute("UPDATE events SET next_attempt_at=0")
    stored = inbox.get(eid2)
    assert stored.done and stored.status == "matched" and stored.runs[0].status == "failed"
    assert "gave up after 2 attempts" in stored.runs[0].detail
    assert "dead-lettered" in [h["what"] for h in stored.history]


def test_a_raising_non_idempotent_provider_is_not_retried(tmp_path, triggers):
    gh = CountingProvider("github", fail_times=1)
    inbox, worker = make_worker(tmp_path / "state", triggers, {"github": gh})
    [eid] = inbox.put("mlflow", [ev()])
    worker.drain()
    [run] = inbox.get(eid).runs
    assert run.status == "failed" and "503" in run.detail and len(gh.calls) == 1


def test_a_dispatch_with_an_unknown_outcome_is_recorded_unknown_and_not_retried(tmp_path, triggers):
    """A start request that timed out after it was sent may have started the run: even an
    idempotent provider's run is then left for a person (events replay), never sent again."""

    class TimedOut(CountingProvider):
        def dispatch(self, run):
            self.calls.append(run.run_id)
            raise ServiceError("GitHub did not answer; it may have started the run", outcome="unknown")

    gh = TimedOut("github", idempotent=True)
    inbox, worker = make_worker(tmp_path / "state", triggers, {"github": gh})
    [eid] = inbox.put("mlflow", [ev()])
    worker.drain()
    inbox._db().execute("UPDATE events SET next_attempt_at=0")
    worker.drain()
    stored = inbox.get(eid)
    assert [r.status for r in stored.runs] == ["unknown"] and "may have started" in stored.runs[0].detail
    assert len(gh.calls) == 1 and stored.done


def test_replay_dispatches_again_with_a_new_run_id(tmp_path, triggers):
    gh = CountingProvider("github")
    inbox, worker = make_worker(tmp_path / "state", triggers, {"github": gh})
    [eid] = inbox.put("mlflow", [ev()])
    worker.drain()
    stored = worker.replay(eid)
    assert stored.status == "matched" and len(stored.runs) == 2
    assert len(set(gh.calls)) == 2 and stored.runs[1].run_id == run_id_for(eid, "churn-candidates", 1)


def test_events_command_list_show_replay(tmp_path, triggers, capsys):
    state = tmp_path / "state"
    inbox = Inbox(state)
    ids = inbox.put("mlflow", [ev(model="other"), ev(model="churn-model", version="7", tags={}), ev(is_test=True, version="8")])
    # rules without a provider to call: record matches only
    Worker(inbox, [r for r in load_rules(triggers) if r.pipeline is None], triggers).drain()

    assert cli.main(["events", "list", "--state-dir", str(state), "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["id"] for i in items] == list(ids)
    assert [i["status"] for i in items] == ["unmatched", "matched", "ignored"]
    assert items[1]["rules"] == ["churn-record-only"]
    for item in items:
        assert {"id", "source", "kind", "model", "version", "status", "rules", "received_at"} <= set(item)

    assert cli.main(["events", "show", ids[1][:10], "--state-dir", str(state), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == ids[1] and shown["status"] == "matched" and shown["runs"] == []
    assert [h["what"] for h in shown["history"]] == ["received", "matched"]
    assert ModelVersionEvent.from_dict(shown) == inbox.get(ids[1]).event

    assert cli.main(["events", "show", ids[1], "--state-dir", str(state)]) == 0
    assert "churn-record-only" in capsys.readouterr().out

    assert cli.main(["events", "show", "ev_missing", "--state-dir", str(state)]) == 4
    assert "no event 'ev_missing'" in capsys.readouterr().err

    norules = tmp_path / "only-record"
    norules.mkdir()
    (norules / "r.yml").write_text("name: any-model\nmatch: {model: '*'}\n")
    assert cli.main(["events", "replay", ids[0], "--state-dir", str(state), "--triggers", str(norules), "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["status"] == "matched" and replayed["rules"] == ["any-model"]
    assert cli.main(["events", "list", "--state-dir", str(tmp_path / "nothing-here")]) == 4


def test_two_workers_run_different_models_at_once_and_each_models_events_in_order(tmp_path, triggers):
    import threading
    import time

    release = threading.Event()
    calls: list[tuple[str, str]] = []

    class Slow(CountingProvider):
        def dispatch(self, run):
            calls.append((self.name, run.event.version))
            if run.event.version == "3":
                assert release.wait(20), "never released"
            return super().dispatch(run)

    providers = {"github": Slow("github"), "gitlab": Slow("gitlab")}
    inbox = Inbox(tmp_path / "state")
    inbox.put("mlflow", [ev(version="3"), ev(version="4"), ev(model="fraud", version="1", tags={})])
    stop = threading.Event()
    workers = [Worker(Inbox(tmp_path / "state"), load_rules(triggers), triggers,
                      get_provider=lambda name: providers[name], batch=1) for _ in range(2)]
    threads = [threading.Thread(target=w.run_forever, args=(stop, 0.05), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 10
        while ("gitlab", "1") not in calls and time.monotonic() < deadline:
            time.sleep(0.02)
        # fraud went out while churn v3 is still dispatching; churn v4 waits behind v3
        assert ("gitlab", "1") in calls and calls.count(("github", "3")) == 1 and ("github", "4") not in calls
        release.set()
        deadline = time.monotonic() + 10
        while ("github", "4") not in calls and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [c for c in calls if c[0] == "github"] == [("github", "3"), ("github", "4")]
    finally:
        release.set()
        stop.set()
        for w in workers:
            w.wake.set()
        for t in threads:
            t.join(10)


def test_a_claimed_batch_is_matched_in_one_go_and_only_one_dispatch_is_kept(tmp_path, triggers):
    """A worker claims many events at once: all outcomes are recorded together, events without
    runs are finished, one event with runs is dispatched and the others are handed back (free for
    another worker, the claim not counted as an attempt); a model whose event waits for its
    dispatch has its later events handed back undecided, so v3 is matched only after v2."""
    gh = CountingProvider("github")
    inbox, worker = make_worker(tmp_path / "state", triggers, {"github": gh})
    ids = inbox.put("mlflow", [ev("churn-a", "2"), ev("churn-a", "3"), ev("churn-b", "2"),
                               ev("churn-c", "1"), ev("other", "1")])
    a2, a3, b2, c1, other = ids
    writes_before = inbox._committer.commits
    batch = inbox.claim(worker.owner, limit=16)
    assert [c.id for c in batch] == ids
    finished, kept, handed_back = worker._decide_batch(batch)
    assert inbox._committer.commits - writes_before == 2  # the claim, then every outcome at once
    assert (finished, kept.id, handed_back) == (2, a2, 2)  # c1 (record-only match) and other (unmatched)
    stored = {i: inbox.get(i) for i in ids}
    assert stored[a2].status == "matched" and stored[a2].runs and not stored[a2].done
    assert stored[a3].status == "pending"  # after a2's dispatch, not before
    assert stored[b2].status == "matched" and stored[b2].runs[0].status == "recorded"
    assert stored[c1].done and stored[c1].status == "matched" and stored[other].done
    assert stored[other].status == "unmatched"
    rows = dict(sqlite_rows(inbox, "SELECT id, lease_owner FROM events WHERE id IN (?, ?, ?)", (a2, a3, b2)))
    assert rows == {a2: worker.owner, a3: None, b2: None}
    assert stored[b2].attempts == 0 and stored[a3].attempts == 0  # handed back: not an attempt
    worker.process(kept)
    assert worker.drain() == 2  # b2 dispatched, then a3 matched and dispatched
    assert len(gh.calls) == 3 and all(e.done for e in inbox.list())
    assert inbox.get(a3).runs[0].status == "dispatched"


def sqlite_rows(inbox, sql, params):
    import sqlite3

    db = sqlite3.connect(inbox.path)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()
