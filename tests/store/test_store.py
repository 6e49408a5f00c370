"""The store over SQLite and PostgreSQL alike: history, approvals, target records, URLs, migrations."""

from __future__ import annotations

import multiprocessing
import os

import pytest
from sqlalchemy import inspect, text

from pipeline_plugin.errors import ConfigError, NotFoundError, ServiceError
from pipeline_plugin.history import History, Record
from pipeline_plugin.store import DATABASE_URL_ENV, mask, normalize_url, open_store, use_database_url
from pipeline_plugin.store.engine import _engines
from pipeline_plugin.store.targets import TargetRecords


def test_history_records_and_queries(store_url, tmp_path):
    h = History(tmp_path, store=open_store(url=store_url))
    a = h.record(Record(service="churn", env="staging", action="deploy", status="succeeded", image_id="sha256:a",
                        details={"x": [1, 2]}))
    h.record(service="churn", env="staging", action="smoke-test", status="passed", image_id="sha256:a")
    h.record(service="churn", env="staging", action="deploy", status="failed", image_id="sha256:b")
    h.record(service="fraud", env="production", action="promote", status="succeeded", image_id="sha256:c")
    assert a.id is not None
    assert [r.action for r in h.records(service="churn")] == ["deploy", "smoke-test", "deploy"]  # newest first
    assert h.records(service="churn", limit=1)[0].status == "failed"
    assert h.serving("churn", "staging").id == a.id
    assert h.serving("churn", "production") is None
    assert h.passed_smoke_test("churn", "staging", "sha256:a").action == "smoke-test"
    assert h.passed_smoke_test("churn", "staging", "sha256:b") is None
    assert h.services() == ["churn", "fraud"]
    assert h.environments("churn") == ["staging"]
    assert h.records(service="churn", action="deploy", status="succeeded")[0].details == {"x": [1, 2]}
    with pytest.raises(ValueError, match="unknown history action"):
        h.record(service="churn", env="staging", action="dance", status="succeeded")


def test_approvals(store_url, tmp_path):
    h = History(tmp_path, store=open_store(url=store_url))
    first = h.request_approval("run-1", "churn", {"image": "x"})
    again = h.request_approval("run-1", "churn", {"image": "y"})  # the first request is kept
    assert first.status == again.status == "pending" and again.request == {"image": "x"}
    h.request_approval("run-2", "fraud", {})
    assert [a.run_id for a in h.approvals(status="pending")] == ["run-1", "run-2"]
    assert [a.run_id for a in h.approvals(service="fraud")] == ["run-2"]
    decided = h.decide("run-1", "approved", by="alice")
    assert (decided.status, decided.decided_by) == ("approved", "alice")
    assert h.decide("run-1", "rejected", by="bob").status == "approved"  # deciding twice keeps the first
    assert h.decide("run-1", "done", by="x").status == "done"
    with pytest.raises(NotFoundError, match="run-2"):  # the pending list is named
        h.approval("nope")


def test_target_records(store_url):
    store = open_store(url=store_url)
    recs = TargetRecords(store, "docker")
    assert recs.read("churn", "staging") is None
    recs.write("churn", "staging", {"port": 1, "deployment": {"image": "a"}})
    recs.write("churn", "staging", {"port": 2, "deployment": {"image": "b"}})  # replaces
    recs.write("churn", "production", {"port": 3, "deployment": {"image": "c"}})
    assert recs.read("churn", "staging")["port"] == 2
    assert TargetRecords(store, "process").read("churn", "staging") is None  # per target
    assert recs.keys() == [("churn", "production"), ("churn", "staging")]
    assert recs.keys(service="other") == []
    recs.append_history("churn", "staging", {"image": "a"}, "replaced", replaced_by="b")
    recs.append_history("churn", "staging", {"image": "b"}, "deleted")
    hist = recs.history("churn", "staging")
    assert [(h["event"], h["deployment"]["image"]) for h in hist] == [("replaced", "a"), ("deleted", "b")]
    assert hist[0]["replaced_by"] == "b"
    recs.clear("churn", "staging")
    recs.clear("churn", "staging")  # idempotent
    assert recs.read("churn", "staging") is None
    recs.remember_image("sha256:x", "/tmp/a")
    recs.remember_image("sha256:x", "/tmp/b")
    assert recs.image_location("sha256:x") == "/tmp/b" and recs.image_location("sha256:y") is None


def test_reopening_sees_the_same_data_and_keeps_one_revision(store_url):
    History(store=open_store(url=store_url)).record(service="s", env="e", action="deploy", status="succeeded")
    _engines.clear()  # as a new process would
    store = open_store(url=store_url)
    assert History(store=store).records()[0].service == "s"
    with store.engine.connect() as db:
        assert db.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["0005"]  # the newest migration (0005: the index of unfinished events)


def test_a_poll_state_from_0003_is_upgraded_and_keeps_its_rows(store_url):
    """A database a 0003 release wrote (poll state without the models each poller covers) is
    migrated in place when this code opens it: the row stays, its models are "not known"."""
    store = open_store(url=store_url)
    with store.engine.begin() as db:  # back to what 0003 made, with a registry polled already
        db.execute(text("ALTER TABLE inbox_poll_state DROP COLUMN models_json"))
        db.execute(text("UPDATE alembic_version SET version_num = '0003'"))
        db.execute(text("INSERT INTO inbox_poll_state(source, registry, first_poll_at, mode, baseline)"
                        " VALUES ('oci', 'registry http://r:5000', '2026-12-01T00:00:00+00:00', 'baseline', 7)"))
    _engines.clear()  # as a new process of this release would
    store = open_store(url=store_url)
    with store.engine.connect() as db:
        assert db.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
        row = db.execute(text("SELECT registry, baseline, models_json FROM inbox_poll_state")).one()
    assert tuple(row) == ("registry http://r:5000", 7, None)


def test_an_inbox_from_0004_gets_the_index_of_unfinished_events(store_url):
    """A database a 0004 release wrote has no index of unfinished events: opening it with this
    release adds it (the claim would read every model's whole history without it)."""
    store = open_store(url=store_url)
    with store.engine.begin() as db:
        db.execute(text("DROP INDEX inbox_events_unfinished"))
        db.execute(text("UPDATE alembic_version SET version_num = '0004'"))
    _engines.clear()  # as a new process of this release would
    store = open_store(url=store_url)
    with store.engine.connect() as db:
        assert db.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
        assert "inbox_events_unfinished" in {i["name"] for i in inspect(db).get_indexes("inbox_events")}


def test_a_newer_schema_is_refused(store_url):
    store = open_store(url=store_url)
    with store.engine.begin() as db:
        db.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    _engines.clear()
    with pytest.raises(ConfigError) as err:
        open_store(url=store_url)
    message = str(err.value)
    assert "schema revision 9999" in message and "upgrade pipeline-plugin" in message and "0005" in message
    assert "pp-test-s3cret" not in message


def test_an_old_history_sqlite_is_adopted(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "history.sqlite")
    db.executescript(
        "CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, service TEXT NOT NULL,"
        " env TEXT NOT NULL, action TEXT NOT NULL, status TEXT NOT NULL, model TEXT, version TEXT, image TEXT,"
        " image_id TEXT, scoring_uri TEXT, target TEXT, run_id TEXT, cause TEXT, reason TEXT NOT NULL DEFAULT '',"
        " details TEXT NOT NULL DEFAULT '{}');"
        "CREATE TABLE approvals (run_id TEXT PRIMARY KEY, service TEXT NOT NULL, status TEXT NOT NULL,"
        " requested_at TEXT NOT NULL, decided_at TEXT, decided_by TEXT, request TEXT NOT NULL);"
        "INSERT INTO records (time, service, env, action, status) VALUES ('t', 'old', 'staging', 'deploy', 'succeeded');"
    )
    db.commit()
    db.close()
    h = History(tmp_path)
    assert h.serving("old", "staging").id == 1
    assert h.record(service="old", env="staging", action="promote", status="succeeded").id == 2


@pytest.mark.parametrize(
    "url, fix",
    [
        ("mysql://bob:hunter2@db/x", "does not support"),
        ("postgresql://bob:hunter2@db", "names no database"),
        ("postgresql//bob:hunter2@db/x", "not a database URL"),
        ("sqlite://", "names no SQLite file"),
    ],
)
def test_bad_urls_name_the_variable_and_mask_the_password(url, fix, monkeypatch):
    with pytest.raises(ConfigError) as err:
        use_database_url(url)
    assert "--database-url" in str(err.value) and fix in str(err.value)
    assert "hunter2" not in str(err.value)
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    with pytest.raises(ConfigError, match=DATABASE_URL_ENV.replace("$", r"\$")):
        open_store()


def test_urls_are_mapped_to_psycopg_and_masked():
    assert normalize_url("postgres://u:p@h:5/d") == "postgresql+psycopg://u:p@h:5/d"
    assert normalize_url("postgresql://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    assert mask("postgresql+psycopg://u:s3cret@h:5/d") == "postgresql+psycopg://u:***@h:5/d"


def test_an_unreachable_server_is_a_service_error_without_the_password(free_port):
    with pytest.raises(ServiceError) as err:
        open_store(url=f"postgresql://bob:hunter2@127.0.0.1:{free_port}/db")
    assert "hunter2" not in str(err.value) and "bob:***@127.0.0.1" in str(err.value)


def _writer(url: str, service: str, n: int) -> None:
    _engines.clear()
    h = History(store=open_store(url=url))
    for i in range(n):
        h.record(service=service, env="staging", action="deploy", status="succeeded", version=str(i))
        h.request_approval(f"{service}-{i}", service, {})


def test_two_processes_write_at_once(store_url):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(store_url, name, 40)) for name in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    h = History(store=open_store(url=store_url))
    for name in ("a", "b"):
        assert sorted(int(r.version) for r in h.records(service=name)) == list(range(40))
    ids = [r.id for r in h.records()]
    assert len(set(ids)) == 80 and ids == sorted(ids, reverse=True)
    assert len(h.approvals()) == 80


def _hold(url: str, name: str, marker: str) -> None:
    import time

    _engines.clear()
    with open_store(url=url).lock(name):
        with open(marker, "a") as fh:
            fh.write(f"{os.getpid()} in\n")
        time.sleep(0.5)
        with open(marker, "a") as fh:
            fh.write(f"{os.getpid()} out\n")


def test_named_lock_excludes_other_processes(store_url, tmp_path):
    marker = tmp_path / "marker"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hold, args=(store_url, "target:docker:churn:staging", str(marker))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = marker.read_text().split()
    # in/out strictly alternate per process: no two holders at once
    pairs = [lines[i:i + 4] for i in range(0, len(lines), 4)]
    assert len(pairs) == 3 and all(p[0] == p[2] and p[1] == "in" and p[3] == "out" for p in pairs)


def test_a_deployment_recorded_on_another_host_says_so(tmp_path, monkeypatch):
    from pipeline_plugin.targets.process import ProcessTarget

    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    deployment = {"service": "churn", "env": "staging", "image": "/x", "image_id": "sha256:1", "version": "3",
                  "scoring_uri": "http://127.0.0.1:1/score", "swagger_uri": "", "health_uri": ""}
    TargetRecords(open_store(tmp_path), "process").write(
        "churn", "staging", {"port": 1, "host": "runner-7", "instance": {"pid": 1}, "deployment": deployment})
    found = ProcessTarget(state_dir=tmp_path).get("churn", "staging")
    assert found.status == "failed" and "deployed on host 'runner-7'" in found.details["problems"][0]


def test_a_local_target_state_from_before_the_store_is_imported_once(tmp_path, monkeypatch):
    import json

    from pipeline_plugin.targets.process import ProcessTarget

    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    old = tmp_path / "targets" / "process" / "churn" / "staging"
    old.mkdir(parents=True)
    deployment = {"service": "churn", "env": "staging", "image": "/x", "image_id": "sha256:2", "version": "2",
                  "scoring_uri": "http://127.0.0.1:1/score", "swagger_uri": "", "health_uri": ""}
    (old / "deployment.json").write_text(json.dumps({"port": 1, "instance": {"pid": 1, "name": "p"}, "deployment": deployment}))
    (old / "history.jsonl").write_text(json.dumps({"event": "replaced", "at": "t", "replaced_by": "sha256:2",
                                                   "deployment": {**deployment, "version": "1"}}) + "\n")
    target = ProcessTarget(state_dir=tmp_path)
    [listed] = target.list()
    assert (listed.version, listed.status) == ("2", "failed")  # pid 1 is not its process
    assert [h["deployment"]["version"] for h in target.history("churn", "staging")] == ["1"]
    assert not (old / "deployment.json").exists() and (old / "deployment.json.imported").exists()
    record = TargetRecords(open_store(tmp_path), "process").read("churn", "staging")
    assert record["prefix"] == str(old)  # its nginx stays where it was
