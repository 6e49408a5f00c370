"""The inbox: durable, de-duplicated storage; leases; runs recorded once; latest version."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest

from pipeline_plugin.errors import NotFoundError
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.inbox import Inbox, event_id_for, run_id_for


def raw_insert(inbox, sql: str) -> None:
    """``sql`` straight into the inbox's database (``{runs}``: its runs table); it must break a constraint."""
    if getattr(inbox, "backend", "sqlite") == "sqlite":
        with pytest.raises(sqlite3.IntegrityError):
            inbox._db().execute(sql.format(runs="runs"))
    else:
        from sqlalchemy import text
        from sqlalchemy.exc import IntegrityError

        with pytest.raises(IntegrityError), inbox.engine.begin() as conn:
            conn.execute(text(sql.format(runs="inbox_runs")))


def ev(version="3", delivery_id=None, **kw) -> ModelVersionEvent:
    data = dict(
        source="mlflow",
        kind="model_version.created",
        model="churn-model",
        version=version,
        delivery_id=delivery_id or f"d-{version}",
        registry={"tracking_uri": "http://mlflow:5000"},
    )
    data.update(kw)
    return ModelVersionEvent.from_dict(data)


def test_put_is_committed_in_wal_with_full_sync(tmp_path):
    inbox = Inbox(tmp_path)
    ids = inbox.put("mlflow", [ev("1")])
    assert not ids.duplicate and len(ids) == 1
    db = inbox._db()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    # another process sees it at once: it is committed, not buffered in this one
    out = subprocess.run(
        [sys.executable, "-c", f"import sqlite3; print(sqlite3.connect({str(inbox.path)!r}).execute('select id from events').fetchall())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ids[0] in out


def test_same_delivery_id_is_stored_once(any_inbox):
    inbox = any_inbox()
    first = inbox.put("mlflow", [ev("1", delivery_id="abc")])
    # a retry of the same delivery, even if a field differs, is the same delivery
    again = inbox.put("mlflow", [ev("1", delivery_id="abc", tags={"x": "y"})])
    assert again.duplicate and list(again) == list(first)
    assert len(inbox.list()) == 1
    history = [h["what"] for h in inbox.get(first[0]).history]
    assert history == ["received", "duplicate delivery"]


def test_same_change_with_new_delivery_id_is_stored_once(any_inbox):
    inbox = any_inbox()
    first = inbox.put("mlflow", [ev("1", delivery_id="a")])
    second = inbox.put("mlflow", [ev("1", delivery_id="b")])
    assert second.duplicate and list(second) == list(first)
    # a third retry of delivery b is caught by its delivery id
    assert inbox.put("mlflow", [ev("1", delivery_id="b")]).duplicate
    assert len(inbox.list()) == 1
    # a different version or registry is a different change
    assert not inbox.put("mlflow", [ev("2", delivery_id="c")]).duplicate
    assert not inbox.put("mlflow", [ev("1", delivery_id="d", registry={"tracking_uri": "http://other"})]).duplicate
    assert len(inbox.list()) == 3


def test_a_test_delivery_never_swallows_the_real_change(any_inbox):
    """A registry's test delivery (or a replay marked as one) for a version that is later really
    announced: the real delivery is its own event, not a duplicate of the test."""
    inbox = any_inbox()
    test = inbox.put("mlflow", [ev("4", delivery_id="t", is_test=True)])
    real = inbox.put("mlflow", [ev("4", delivery_id="r")])
    assert not test.duplicate and not real.duplicate and list(test) != list(real)
    assert inbox.put("mlflow", [ev("4", delivery_id="r2")]).duplicate  # the real change, again
    stored = {e.id: e.event.is_test for e in inbox.list()}
    assert stored == {test[0]: True, real[0]: False}


def test_setting_a_state_back_is_a_new_change_but_repeating_it_is_not(any_inbox):
    """An alias moved v2 -> v3 -> v2 (a person rolling back in the registry) is three changes; the
    third announced again by a new delivery is still one. Likewise a repository tag pushed A -> B -> A."""
    inbox = any_inbox()

    def alias(version, delivery, name="production"):
        return inbox.put("mlflow", [ev(version, delivery_id=delivery, kind="alias.set", alias=name)])

    first, second, back = alias("2", "a1"), alias("3", "a2"), alias("2", "a3")
    assert not first.duplicate and not second.duplicate and not back.duplicate
    assert len({first[0], second[0], back[0]}) == 3
    again = alias("2", "a4")  # the same state announced again: no new change
    assert again.duplicate and list(again) == list(back)
    assert not alias("2", "a5", name="champion").duplicate  # another alias is its own slot
    assert alias("2", "a6", name="champion").duplicate
    assert not alias("3", "a7").duplicate and not alias("2", "a8").duplicate  # and back again: #2
    assert [e.event.version for e in inbox.list(limit=100) if e.event.alias == "production"].count("2") == 3

    def push(digest, delivery):
        return inbox.put("docker-registry", [ModelVersionEvent.from_dict({
            "source": "docker-registry", "kind": "image.pushed", "model": "team/churn", "version": "latest",
            "digest": digest, "delivery_id": delivery, "registry": {"repository": "127.0.0.1:5000"}})])

    a, b, a2, a3 = push("sha256:" + "a" * 64, "p1"), push("sha256:" + "b" * 64, "p2"), push("sha256:" + "a" * 64, "p3"), push("sha256:" + "a" * 64, "p4")
    assert not a.duplicate and not b.duplicate and not a2.duplicate and a3.duplicate
    assert a[0] != a2[0] and list(a3) == list(a2)


def test_a_batch_stores_each_event_and_ids_are_stable(any_inbox, tmp_path):
    inbox = any_inbox()
    events = [ev("1"), ev("2"), ev("1", kind="alias.set", alias="champion", delivery_id="al")]
    ids = inbox.put("mlflow", events)
    assert list(ids) == [event_id_for(e) for e in events]
    assert [s.event.version for s in inbox.list()] == ["1", "2", "1"]
    assert Inbox(tmp_path / "elsewhere").put("mlflow", [ev("1")])[0] == ids[0]  # the same id in any inbox


def test_claim_leases_and_a_dead_workers_events_are_taken_over(tmp_path):
    inbox = Inbox(tmp_path)
    inbox.put("mlflow", [ev("1")])
    a, b = inbox.new_owner(), inbox.new_owner()
    [claimed] = inbox.claim(a)
    assert claimed.event.version == "1" and claimed.attempts == 1
    assert inbox.claim(b) == []  # a is alive and holds the lease
    # a process that died holding the lease (kill -9): a pid that no longer runs on this host
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead_owner = f"{a.split(':')[0]}:{proc.pid}:deadbeef"
    inbox._db().execute("UPDATE events SET lease_owner=? WHERE id=?", (dead_owner, claimed.id))
    [taken] = inbox.claim(b)
    assert taken.id == claimed.id and taken.attempts == 2
    assert "lease taken over" in [h["what"] for h in inbox.get(taken.id).history]
    # an expired lease of a live owner elsewhere is taken over too
    inbox._db().execute("UPDATE events SET lease_owner='other-host:1:x', lease_until=? WHERE id=?", (time.time() - 1, taken.id))
    assert [c.id for c in inbox.claim(a)] == [taken.id]
    inbox.finish(taken.id, a)
    assert inbox.claim(b) == [] and inbox.depth() == 0


def test_failures_back_off_then_dead_letter(any_inbox):
    inbox = any_inbox(max_attempts=3)
    [eid] = inbox.put("mlflow", [ev("1")])
    owner = inbox.new_owner()
    for attempt in (1, 2):
        [c] = inbox.claim(owner)
        assert c.attempts == attempt
        assert inbox.fail(eid, owner, "boom", backoff=0) is False
    [c] = inbox.claim(owner)
    assert inbox.fail(eid, owner, "boom for good", backoff=0) is True
    stored = inbox.get(eid)
    assert stored.status == "failed" and stored.done and stored.last_error == "boom for good"
    assert inbox.claim(owner) == []
    assert [h["what"] for h in stored.history].count("attempt failed") == 2


def test_backoff_delays_the_next_claim(any_inbox):
    inbox = any_inbox()
    [eid] = inbox.put("mlflow", [ev("1")])
    owner = inbox.new_owner()
    inbox.claim(owner)
    inbox.fail(eid, owner, "transient", backoff=60)
    assert inbox.claim(owner) == []
    assert inbox.get(eid).status == "pending"


def test_runs_are_recorded_once_with_stable_ids(any_inbox):
    inbox = any_inbox()
    [eid] = inbox.put("mlflow", [ev("1")])
    spec = [{"rule_name": "r1", "provider": "local", "pipeline": {"provider": "local"}}]
    first = inbox.record_runs(eid, 0, spec, status="matched", rules=["r1"])
    again = inbox.record_runs(eid, 0, spec, status="matched", rules=["r1"])  # a restart redoing the step
    assert [r.run_id for r in first] == [r.run_id for r in again] == [run_id_for(eid, "r1")]
    assert len(inbox.runs()) == 1
    # the unique constraint holds even against a raw insert
    raw_insert(inbox, "INSERT INTO {runs}(run_id, event_id, rule_name, generation, provider, created_at, updated_at)"
               " VALUES ('other', '%s', 'r1', 0, 'local', 'x', 'x')" % eid)
    inbox.mark_dispatching(first[0].run_id)
    inbox.record_dispatch(first[0].run_id, "dispatched", url="https://ci.example/runs/1", detail="queued")
    [run] = inbox.get(eid).runs
    assert (run.status, run.url, run.attempts) == ("dispatched", "https://ci.example/runs/1", 1)
    dispatch = [h for h in inbox.get(eid).history if h["what"] == "dispatch dispatched"]
    assert dispatch and dispatch[0]["url"] == "https://ci.example/runs/1"


def test_latest_version_is_the_numeric_maximum(any_inbox):
    inbox = any_inbox()
    for v in ("2", "10", "9", "1.5", "v11-beta"):
        inbox.put("mlflow", [ev(v)])
    key = ev("1").registry_key()
    assert inbox.latest_version("mlflow", key, "churn-model") == "10"
    assert inbox.latest_version("mlflow", "tracking_uri=http://other", "churn-model") is None
    assert inbox.latest_version("mlflow", key, "other-model") is None
    inbox.put("mlflow", [ev("10", kind="model_version.deleted", delivery_id="del-10")])
    assert inbox.latest_version("mlflow", key, "churn-model") == "9"


def test_get_by_prefix_and_not_found(any_inbox):
    inbox = any_inbox()
    [eid] = inbox.put("mlflow", [ev("1")])
    assert inbox.get(eid[:8]).id == eid
    with pytest.raises(NotFoundError) as err:
        inbox.get("ev_nope")
    assert "events list" in err.value.message


def test_list_filters_and_limits(any_inbox):
    inbox = any_inbox()
    ids = inbox.put("mlflow", [ev(str(v)) for v in range(1, 6)])
    inbox.record_runs(ids[0], 0, [], status="ignored", reason="test")
    assert [s.id for s in inbox.list(status="ignored")] == [ids[0]]
    assert [s.event.version for s in inbox.list(limit=2)] == ["4", "5"]


def test_concurrent_writers_share_commits_and_one_failure_stays_its_own(tmp_path):
    import threading

    inbox = Inbox(tmp_path)
    errors: list[BaseException] = []
    results: dict[int, list[str]] = {}

    def writer(n: int) -> None:
        try:
            for i in range(25):
                results[n * 100 + i] = list(inbox.put("mlflow", [ev(str(n * 100 + i))]))
                if i == 10:
                    try:
                        inbox._write(lambda db: (db.execute("INSERT INTO events(id) VALUES ('broken')"), 1 / 0))
                    except (ZeroDivisionError, sqlite3.Error):
                        pass
                    else:
                        raise AssertionError("the failing job did not raise")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stored = {s.id for s in Inbox(tmp_path).list()}
    assert len(stored) == 200 and {i for ids in results.values() for i in ids} == stored
    assert inbox._db().execute("SELECT COUNT(*) FROM events WHERE id='broken'").fetchone()[0] == 0


def test_an_inbox_from_a_newer_version_is_refused(tmp_path):
    from pipeline_plugin.errors import ServiceError

    Inbox(tmp_path).put("mlflow", [ev("1")])
    db = sqlite3.connect(tmp_path / "inbox.sqlite3")
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(ServiceError) as err:
        Inbox(tmp_path)
    assert "newer pipeline-plugin" in err.value.message


def test_workers_get_different_models_at_once_but_each_models_events_in_order(any_inbox):
    """Two workers: while one holds churn v1, churn v2 waits (it must not deploy first, or beside
    it); fraud v1 goes to the other worker at once."""
    inbox = any_inbox()
    inbox.put("mlflow", [ev("1", delivery_id="c1", model="churn"), ev("2", delivery_id="c2", model="churn"),
                         ev("1", delivery_id="f1", model="fraud")])
    a, b = inbox.new_owner(), inbox.new_owner()
    [first] = inbox.claim(a, limit=1)
    assert (first.event.model, first.event.version) == ("churn", "1")
    others = inbox.claim(b, limit=5)
    assert [(c.event.model, c.event.version) for c in others] == [("fraud", "1")]
    inbox.finish(first.id, a)
    inbox.finish(others[0].id, b)
    [then] = inbox.claim(b, limit=5)
    assert (then.event.model, then.event.version) == ("churn", "2")


def test_a_claim_takes_a_models_later_events_with_its_first_and_none_past_a_retry(any_inbox):
    """One worker gets a model's versions together, in order; a version waiting for a retry keeps
    the later ones of its model waiting too (v2 must not deploy before v1 does), not other models'."""
    inbox = any_inbox()
    inbox.put("mlflow", [ev(str(v), delivery_id=f"c{v}") for v in (1, 2, 3)] + [ev("1", delivery_id="f1", model="fraud")])
    a, b = inbox.new_owner(), inbox.new_owner()
    got = inbox.claim(a, limit=10)
    assert [(c.event.model, c.event.version) for c in got] == [("churn-model", "1"), ("churn-model", "2"), ("churn-model", "3"), ("fraud", "1")]
    assert inbox.claim(b, limit=10) == []
    inbox.finish(got[3].id, a)
    inbox.record_decisions(a, [], release=[got[1].id, got[2].id])  # handed back, as the worker does
    inbox.fail(got[0].id, a, "the CI provider does not answer", backoff=60)
    assert inbox.claim(b, limit=10) == []  # churn 2 and 3 wait for churn 1's retry
    assert inbox.depth() == 3


def test_a_model_is_its_source_registry_and_name_when_claimed(any_inbox):
    """One name in two registries and in another source is three models: holding one's versions
    holds back only that one's later versions."""
    inbox = any_inbox()
    other = {"tracking_uri": "http://mlflow-eu:5000"}
    inbox.put("mlflow", [ev("1", delivery_id="a1"), ev("1", delivery_id="b1", registry=other),
                         ev("2", delivery_id="a2"), ev("2", delivery_id="b2", registry=other)])
    inbox.put("huggingface", [ev("1", delivery_id="h1", source="huggingface", registry={})])
    a, b = inbox.new_owner(), inbox.new_owner()
    [held] = inbox.claim(a, limit=1)
    assert (held.event.registry, held.event.version) == ({"tracking_uri": "http://mlflow:5000"}, "1")
    got = inbox.claim(b, limit=10)
    assert [(c.event.source, dict(c.event.registry), c.event.version) for c in got] == [
        ("mlflow", other, "1"), ("mlflow", other, "2"), ("huggingface", {}, "1")]


def test_a_long_backlog_of_a_busy_model_does_not_hold_back_other_models(any_inbox):
    """While a worker runs churn v1's pipeline, churn's 400 later versions wait; fraud's version,
    stored after them, goes to another worker at once."""
    inbox = any_inbox()
    inbox.put("mlflow", [ev(str(v), delivery_id=f"c{v}") for v in range(1, 402)])
    inbox.put("mlflow", [ev("1", delivery_id="f1", model="fraud")])
    a, b = inbox.new_owner(), inbox.new_owner()
    [held] = inbox.claim(a, limit=1)
    assert held.event.version == "1"
    got = inbox.claim(b, limit=1)
    assert [(c.event.model, c.event.version) for c in got] == [("fraud", "1")]


def test_the_serving_worker_drains_a_backlog_of_one_model_in_one_go(any_inbox, tmp_path):
    """A burst of versions of one model (each claim takes many, in order) is matched in one drain,
    not one event per wake-up (once a second when idle)."""
    from pipeline_plugin.rules import load_rules
    from pipeline_plugin.worker import Worker

    inbox = any_inbox()
    inbox.put("mlflow", [ev(str(v), delivery_id=f"c{v}") for v in range(1, 41)] + [ev("1", delivery_id="f1", model="fraud")])
    (tmp_path / "triggers").mkdir()
    (tmp_path / "triggers" / "all.yml").write_text("name: record-all\nmatch: {model: '*'}\n")
    worker = Worker(inbox, load_rules(tmp_path / "triggers"), tmp_path / "triggers")
    assert worker.drain(until_short=True) == 41
    assert inbox.depth() == 0
    assert {e.status for e in inbox.list()} == {"matched"}


def test_an_expired_lease_is_taken_over_by_another_replica(any_inbox):
    """A replica on another host cannot be asked whether it runs: its claim is taken over when the
    lease expires, not before."""
    a_inbox, b_inbox = any_inbox(), any_inbox()
    [eid] = a_inbox.put("mlflow", [ev("1")])
    a, b = a_inbox.new_owner(), b_inbox.new_owner()
    [claimed] = a_inbox.claim(a, lease=1.0)
    assert b_inbox.claim(b) == []
    time.sleep(1.3)
    [taken] = b_inbox.claim(b)
    assert taken.id == eid and taken.attempts == 2
    assert "lease taken over" in [h["what"] for h in b_inbox.get(eid).history]
    a_inbox.finish(eid, a)  # the old holder's late finish changes nothing
    assert b_inbox.depth() == 1
    b_inbox.finish(eid, b)
    assert b_inbox.depth() == 0


def test_concurrent_claimers_get_each_event_once_and_each_models_in_order(any_inbox):
    import threading

    inbox = any_inbox()
    models = ["m%d" % i for i in range(4)]
    for v in range(1, 6):
        inbox.put("mlflow", [ev(str(v), delivery_id=f"{m}-{v}", model=m) for m in models])
    handed: list[tuple[str, str, str]] = []
    busy: set[str] = set()
    overlap: list[str] = []
    guard = threading.Lock()

    def replica() -> None:
        mine = any_inbox()
        owner = mine.new_owner()
        idle = 0
        while idle < 20:
            got = mine.claim(owner, limit=2)
            if not got:
                idle += 1
                time.sleep(0.02)
                continue
            idle = 0
            for c in got:
                with guard:
                    if c.event.model in busy:
                        overlap.append(c.event.model)
                    busy.add(c.event.model)
                    handed.append((c.id, c.event.model, c.event.version))
                time.sleep(0.005)
                with guard:
                    busy.discard(c.event.model)
                mine.finish(c.id, owner)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlap == []  # two versions of one model were never out at once
    assert sorted(i for i, _, _ in handed) == sorted(s.id for s in inbox.list())  # each event once
    for m in models:
        assert [v for _, model, v in handed if model == m] == ["1", "2", "3", "4", "5"]
