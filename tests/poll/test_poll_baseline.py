"""The first poll of a registry is a baseline: turning polling on for a registry full of images
starts no pipeline for them; what is pushed afterwards (also while no poller runs) is announced and
matched. A new poller process on the same inbox does not take a baseline again; ``since`` replaces
the baseline. On the SQLite inbox and on PostgreSQL, against a real docker-registry."""

from __future__ import annotations

import json

import pytest

from pipeline_plugin.cli import main
from pipeline_plugin.inbox.select import open_inbox
from pipeline_plugin.rules import load_rules
from pipeline_plugin.worker import Worker
from tests.poll.registry_push import push
from tests.services import docker_registry

pytestmark = pytest.mark.registry


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """``--database-url`` args for the poll command, or none (the state dir's SQLite inbox)."""
    if request.param == "sqlite":
        return []
    return ["--database-url", request.getfixturevalue("postgres_url")]


def poll(capsys, state, database, *args):
    """`pipeline-plugin poll --once --json` as a new process would run it (an empty Runner)."""
    capsys.readouterr()
    code = main(["poll", "--source", "oci", "--once", "--json", "--state-dir", str(state), *database, *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)["sources"]["oci"], out.err


def worker(inbox, tmp_path):
    """The listener's worker with one rule that matches every model (it records the match)."""
    rules = tmp_path / "triggers"
    rules.mkdir(exist_ok=True)
    (rules / "any.yml").write_text("name: any-model\nmatch: {model: '*'}\n")
    return Worker(inbox, load_rules(rules), rules)


def test_first_poll_is_a_baseline_then_new_tags_are_announced(tmp_path, capsys, database):
    state = tmp_path / "state"
    with docker_registry(tmp_path) as registry:
        for tag in ("v1", "v2", "v3"):
            push(registry.url, "models/churn", tag, tag.encode())
        option = ["--option", f"registry={registry.url}"]

        counts, err = poll(capsys, state, database, *option)
        assert counts | {"error": None} == {"seen": 3, "new": 0, "duplicate": 0, "skipped": 0, "baseline": 3,
                                            "errors": 0, "error": None}
        assert "3 existing version(s) recorded as baseline without starting pipelines" in err
        inbox = open_inbox(state, *database[1:])
        stored = inbox.list()
        assert sorted(e.event.version for e in stored) == ["v1", "v2", "v3"]
        assert {e.status for e in stored} == {"ignored"}
        assert all("existed before polling started at" in e.reason and "set since:" in e.reason for e in stored)
        work = worker(inbox, tmp_path)
        assert work.drain() == 0  # nothing for the worker: no rule matched, no run recorded
        assert not inbox.runs()

        # pushed while no poller runs; the next poll is a new process on the same inbox: no baseline again
        push(registry.url, "models/churn", "v4", b"v4")
        moved = push(registry.url, "models/churn", "v1", b"v1 rebuilt")
        counts, err = poll(capsys, state, database, *option)
        assert (counts["seen"], counts["new"], counts["baseline"], counts["duplicate"]) == (4, 2, 0, 2)
        assert "recorded as baseline" not in err
        assert work.drain() == 2
        matched = {(e.event.version, e.event.digest) for e in inbox.list() if e.status == "matched"}
        assert matched == {("v4", next(e.event.digest for e in inbox.list() if e.event.version == "v4")),
                           ("v1", moved)}
        assert all(e.rules == ["any-model"] for e in inbox.list() if e.status == "matched")

        # polled again: nothing new, nothing of the baseline comes back
        counts, _ = poll(capsys, state, database, *option)
        assert (counts["new"], counts["baseline"], counts["duplicate"]) == (0, 0, 4)
        assert work.drain() == 0
        assert sorted(e.status for e in inbox.list()) == ["ignored", "ignored", "ignored", "matched", "matched"]
        # one baselined version deployed on purpose (what `pipeline-plugin events replay <id>` does)
        v2 = next(e for e in inbox.list() if e.event.version == "v2")
        assert work.replay(v2.id).status == "matched"

        # another registry polled by the same inbox has its own first poll
        with docker_registry(tmp_path / "second") as second:
            push(second.url, "models/credit", "v1", b"credit")
            counts, _ = poll(capsys, state, database, "--option", f"registry={second.url}")
            assert (counts["new"], counts["baseline"]) == (0, 1)


def test_since_replaces_the_baseline(tmp_path, capsys, database):
    """`since` set: no baseline; OCI tags carry no date, so `since` does not filter them and they are
    announced. Dated versions before `since` are skipped: tests/poll/test_poll_loopback.py (Azure ML)
    and test_poll_mlflow.py."""
    state = tmp_path / "state"
    with docker_registry(tmp_path) as registry:
        push(registry.url, "models/churn", "v1", b"v1")
        option = ["--option", f"registry={registry.url}", "--option", "since=2026-01-01T00:00:00Z"]
        counts, _ = poll(capsys, state, database, *option)
        assert (counts["new"], counts["baseline"]) == (1, 0)
        # since removed later: this registry was polled already, so no baseline swallows what is new
        push(registry.url, "models/churn", "v2", b"v2")
        counts, _ = poll(capsys, state, database, "--option", f"registry={registry.url}")
        assert (counts["new"], counts["baseline"], counts["duplicate"]) == (1, 0, 1)
        inbox = open_inbox(state, *database[1:])
        assert worker(inbox, tmp_path).drain() == 2
        assert [e.status for e in inbox.list()] == ["matched", "matched"]


def test_a_model_added_to_the_list_later_has_a_baseline_of_its_own(tmp_path, capsys, database):
    """Widening `repositories` (or making it `all`) must not deploy every version the added models
    already had; what they get afterwards, and a model the registry gets later under `all`, are
    announced."""
    state = tmp_path / "state"
    with docker_registry(tmp_path) as registry:
        push(registry.url, "models/churn", "v1", b"churn v1")
        for tag in ("v1", "v2"):
            push(registry.url, "models/credit", tag, f"credit {tag}".encode())
        option = ["--option", f"registry={registry.url}"]

        counts, _ = poll(capsys, state, database, *option, "--option", "repositories=[models/churn]")
        assert (counts["seen"], counts["baseline"]) == (1, 1)
        # while only churn is polled: churn v2 is new; credit v3 is pushed before credit is polled
        push(registry.url, "models/churn", "v2", b"churn v2")
        push(registry.url, "models/credit", "v3", b"credit v3")
        counts, err = poll(capsys, state, database, *option, "--option", "repositories=[models/churn, models/credit]")
        assert (counts["seen"], counts["new"], counts["baseline"], counts["duplicate"]) == (5, 1, 3, 1)
        assert ("first poll of 1 model(s) newly polled in registry" in err and "(models/credit): 3 existing "
                "version(s) recorded as baseline without starting pipelines" in err), err
        inbox = open_inbox(state, *database[1:])
        work = worker(inbox, tmp_path)
        assert work.drain() == 1
        status = {(e.event.model, e.event.version): e.status for e in inbox.list()}
        assert status == {("models/churn", "v1"): "ignored", ("models/churn", "v2"): "matched",
                          ("models/credit", "v1"): "ignored", ("models/credit", "v2"): "ignored",
                          ("models/credit", "v3"): "ignored"}
        assert all("existed before polling started at" in e.reason for e in inbox.list() if e.status == "ignored")

        # credit is polled now: what it gets next is announced (a new process: the list is in the poll state)
        push(registry.url, "models/credit", "v4", b"credit v4")
        counts, err = poll(capsys, state, database, *option, "--option", "repositories=[models/churn, models/credit]")
        assert (counts["new"], counts["baseline"]) == (1, 0) and "newly polled" not in err
        assert work.drain() == 1

        # the list becomes `all`: the repositories not listed before are a baseline, once
        push(registry.url, "models/fraud", "v1", b"fraud v1")
        counts, err = poll(capsys, state, database, *option)
        assert (counts["new"], counts["baseline"]) == (0, 1) and "(models/fraud)" in err
        # under `all`, a repository the registry gets later is new, and so is its first tag
        push(registry.url, "models/late", "v1", b"late v1")
        push(registry.url, "models/fraud", "v2", b"fraud v2")
        counts, err = poll(capsys, state, database, *option)
        assert (counts["new"], counts["baseline"]) == (2, 0), err
        assert work.drain() == 2
        matched = sorted((e.event.model, e.event.version) for e in inbox.list() if e.status == "matched")
        assert matched == [("models/churn", "v2"), ("models/credit", "v4"), ("models/fraud", "v2"),
                           ("models/late", "v1")]
        assert not [e for e in inbox.list() if e.status == "pending"]


def test_a_poll_state_from_an_older_release_is_read_then_kept_up_to_date(tmp_path, capsys):
    """An SQLite inbox an older release polled (its poll_state table has no list of models): the
    registry counts as polled, the models it holds events of as covered, so a model added to the
    list in the same upgrade is still a baseline; the table gains the column, and the list is kept."""
    import sqlite3

    from pipeline_plugin.poll.oci import OciPoller

    state = tmp_path / "state"
    with docker_registry(tmp_path) as registry:
        push(registry.url, "models/churn", "v1", b"churn v1")
        # what the older release left: its first poll's baseline event, and its state row
        old = OciPoller(registry.url, ["models/churn"], None, None, None)
        assert open_inbox(state).put(old.event_source, list(old.list_versions())).duplicate is False
        db = sqlite3.connect(state / "inbox.sqlite3")
        db.execute("CREATE TABLE poll_state (source TEXT NOT NULL, registry TEXT NOT NULL, first_poll_at TEXT NOT NULL,"
                   " mode TEXT NOT NULL, baseline INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (source, registry))")
        db.execute("INSERT INTO poll_state VALUES ('oci', ?, '2026-12-01T00:00:00+00:00', 'baseline', 1)",
                   (f"registry {registry.url}",))
        db.commit()
        db.close()
        push(registry.url, "models/churn", "v2", b"churn v2")
        for tag in ("v1", "v2"):
            push(registry.url, "models/credit", tag, f"credit {tag}".encode())
        option = ["--option", f"registry={registry.url}", "--option", "repositories=[models/churn, models/credit]"]
        counts, err = poll(capsys, state, [], *option)
        # polled before: churn v2 is new; credit, of which the inbox holds nothing, is a baseline
        assert (counts["new"], counts["baseline"], counts["duplicate"]) == (1, 2, 1), err
        assert "first poll of registry" not in err and "(models/credit): 2 existing version(s)" in err
        db = sqlite3.connect(state / "inbox.sqlite3")
        assert db.execute("SELECT models_json FROM poll_state").fetchall() == [('["models/churn", "models/credit"]',)]
        db.close()


def test_the_poll_state_keeps_the_models_and_moves_a_row_to_a_new_key(tmp_path, database):
    """What the runner relies on, on both inbox backends: the covered models as written, a row moved
    from an older key (never over a row the new key has already)."""
    from pipeline_plugin.poll.baseline import covered, state_for

    from pipeline_plugin.events import ModelVersionEvent

    inbox = open_inbox(tmp_path / "state", *database[1:])
    state = state_for(inbox)
    assert state.models_held("docker-registry") == []
    for model, version in (("models/b", "v1"), ("models/a", "v1"), ("models/a", "v2")):
        inbox.put("docker-registry", [ModelVersionEvent(source="docker-registry", kind="image.pushed", model=model,
                                                        version=version, delivery_id=f"{model}:{version}")])
    assert state.models_held("docker-registry") == ["models/a", "models/b"]
    assert state.models_held("mlflow") == []
    state.mark("azureml", "Azure ML workspace ws", "2026-12-01T00:00:00+00:00", "baseline", 3, None)
    assert state.get("azureml", "Azure ML workspace ws")["models"] is None  # not known (an older release)
    state.rename("azureml", "Azure ML workspace ws", "Azure ML workspace /subscriptions/s/.../ws")
    assert state.get("azureml", "Azure ML workspace ws") is None
    moved = state.get("azureml", "Azure ML workspace /subscriptions/s/.../ws")
    assert (moved["first_poll_at"], moved["baseline"]) == ("2026-12-01T00:00:00+00:00", 3)
    state.set_models("azureml", "Azure ML workspace /subscriptions/s/.../ws", covered(["b", "a", "b"]))
    assert state.get("azureml", "Azure ML workspace /subscriptions/s/.../ws")["models"] == ["a", "b"]
    state.mark("azureml", "old", "2026-12-02T00:00:00+00:00", "since", 0, covered(None))
    state.rename("azureml", "old", "Azure ML workspace /subscriptions/s/.../ws")  # taken: both stay as they were
    assert state.get("azureml", "old")["models"] == "all"
    assert state.get("azureml", "Azure ML workspace /subscriptions/s/.../ws")["baseline"] == 3
