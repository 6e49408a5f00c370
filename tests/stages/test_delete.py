"""`pipeline-plugin delete`: an environment's processes and stable address stop, the store forgets
what served there, the history says who deleted what; twice is no error; production needs --yes."""

from __future__ import annotations

import json

import pytest
import requests

from pipeline_plugin.history import History
from pipeline_plugin.targets import DeploymentSpec, get_target

from .packages import package_dir
from .test_promote_rollback import cli, files, service, stage_version, state_dir  # noqa: F401 - fixtures


def test_delete_stops_an_environment_and_is_idempotent(tmp_path, service, files, state_dir, capsys, monkeypatch):
    monkeypatch.setenv("USER", "dana")
    dep = stage_version(capsys, tmp_path, service, files, 1)
    assert requests.get(dep.scoring_uri.rsplit("/score", 1)[0] + "/", timeout=10).status_code == 200

    code, out, err = cli(capsys, "delete", "--name", service, "--env", "staging", "--reason", "retired", "--json")
    assert code == 0, out + err
    result = json.loads(out)
    assert result["status"] == "deleted" and result["target"] == "process"
    assert result["deleted"]["version"] == "1" and result["deleted"]["image_id"] == dep.image_id
    assert get_target("process").get(service, "staging") is None
    with pytest.raises(requests.ConnectionError):
        requests.get(dep.scoring_uri, timeout=5)
    history = History(state_dir)
    [rec] = history.records(service=service, env="staging", action="delete")
    assert rec.cause == "user:dana" and rec.reason == "retired" and rec.version == "1"
    assert history.serving(service, "staging") is None  # status no longer says staging serves v1

    # deleting what is gone is not an error, and says so
    code, out, err = cli(capsys, "delete", "--name", service, "--env", "staging", "--json")
    assert code == 0, out + err
    assert json.loads(out)["status"] == "absent"


def test_production_is_deleted_only_with_yes(tmp_path, service, state_dir, capsys):
    dep = get_target("process").create(DeploymentSpec(service, "production", str(package_dir(tmp_path, 1))))
    code, _, err = cli(capsys, "delete", "--name", service, "--env", "production", "--target", "process")
    assert code == 2 and "--yes" in err
    assert get_target("process").get(service, "production").image_id == dep.image_id  # still serving
    code, out, err = cli(capsys, "delete", "--name", service, "--env", "production", "--target", "process", "--yes")
    assert code == 0, out + err
    assert get_target("process").get(service, "production") is None
