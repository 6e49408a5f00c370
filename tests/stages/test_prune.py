"""`pipeline-plugin prune` against the real Docker Engine and the store (SQLite and PostgreSQL):
images of versions that serve nowhere, that no rollback, approval or container needs and that are
older than the newest --keep are removed; everything else is kept with its reason. Images are tiny
(LABEL only, FROM the local base) and carry a unique service name, so other tests' images are never
candidates."""

from __future__ import annotations

import io
import json
import uuid

import pytest

from pipeline_plugin.cli import main
from pipeline_plugin.history import History, Record
from pipeline_plugin.store import open_store


def build(docker_client, base_image: str, repo: str, service: str, version: int) -> str:
    dockerfile = (f"FROM {base_image}\n"
                  f'LABEL io.pipeline-plugin.model.name="{service}" io.pipeline-plugin.model.version="{version}"\n')
    image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{repo}:{version}",
                                          rm=True, pull=False)
    return image.id


@pytest.fixture
def images(docker_client, base_image):
    service = "prune-" + uuid.uuid4().hex[:10]
    repo = "pp-test/" + service
    ids = {v: build(docker_client, base_image, repo, service, v) for v in range(1, 7)}
    yield service, repo, ids
    import docker

    for v in ids:
        try:
            docker_client.images.remove(f"{repo}:{v}", force=True)
        except docker.errors.ImageNotFound:
            continue  # pruned by the test


def served(history: History, service: str, ids: dict[int, str], repo: str) -> None:
    """production: v2 then v3 (so v3 serves, v2 is the rollback target); staging: v5."""
    def rec(env, action, v):
        history.record(Record(service=service, env=env, action=action, status="succeeded", model=service,
                              version=str(v), image=f"{repo}:{v}", image_id=ids[v], target="docker"))
    rec("staging", "package", 1)
    rec("production", "promote", 2)
    rec("production", "promote", 3)
    rec("staging", "deploy", 5)
    # a failed deploy of v4 serves nothing
    history.record(Record(service=service, env="staging", action="deploy", status="failed", version="4",
                          image_id=ids[4], target="docker"))


def exists(docker_client, image_id: str) -> bool:
    import docker

    try:
        docker_client.images.get(image_id)
        return True
    except docker.errors.ImageNotFound:
        return False


def run_prune(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["prune", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_prune_removes_only_what_nothing_needs(request, docker_client, images, tmp_path, capsys, monkeypatch, store):
    monkeypatch.delenv("PIPELINE_PLUGIN_DATABASE_URL", raising=False)
    service, repo, ids = images
    db = ["--database-url", request.getfixturevalue("postgres_url")] if store == "postgres" else []
    history = History(tmp_path / "state", store=open_store(tmp_path / "state", db[1] if db else None))
    served(history, service, ids, repo)
    container = docker_client.containers.create(f"{repo}:1", command=["true"], name=service + "-stopped")
    try:
        common = ["--name", service, "--keep", "1", "--state-dir", str(tmp_path / "state"), *db]
        dry = run_prune(capsys, *common, "--dry-run")
        assert dry["dry_run"] is True
        assert {v["version"] for v in dry["removed"]} == {"4"}
        assert all(exists(docker_client, i) for i in ids.values())  # a dry run removes nothing

        result = run_prune(capsys, *common)
        assert [v["version"] for v in result["removed"]] == ["4"]
        kept = {v["version"]: " ".join(v["reasons"]) for v in result["kept"]}
        assert set(kept) == {"1", "2", "3", "5", "6"}
        assert "serves" in kept["3"] and "production" in kept["3"]
        assert "rollback target" in kept["2"]
        assert "serves" in kept["5"] and "staging" in kept["5"]
        assert "recent" in kept["6"]
        assert "container" in kept["1"]
        assert not exists(docker_client, ids[4])
        assert all(exists(docker_client, ids[v]) for v in (1, 2, 3, 5, 6))
    finally:
        container.remove(force=True)

    # without the container and with --keep 0, v1 and v6 go too; what serves or rolls back stays
    result = run_prune(capsys, "--name", service, "--keep", "0", "--state-dir", str(tmp_path / "state"), *db)
    assert sorted(v["version"] for v in result["removed"]) == ["1", "6"]
    assert sorted(v["version"] for v in result["kept"]) == ["2", "3", "5"]
    assert [v for v in (1, 2, 3, 4, 5, 6) if exists(docker_client, ids[v])] == [2, 3, 5]


def test_other_services_images_are_never_touched(docker_client, images, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PIPELINE_PLUGIN_DATABASE_URL", raising=False)
    service, _repo, ids = images
    result = run_prune(capsys, "--name", service + "-other", "--keep", "0", "--state-dir", str(tmp_path / "s"))
    assert result["removed"] == [] and result["kept"] == []
    assert all(exists(docker_client, i) for i in ids.values())


def test_keep_must_be_a_count(capsys):
    with pytest.raises(SystemExit) as info:
        main(["prune", "--keep", "-1"])
    assert info.value.code == 2
    assert "--keep" in capsys.readouterr().err
