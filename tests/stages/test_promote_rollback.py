"""promote, rollback, approve and status over the process target (real runtime processes behind a
real nginx stable address), driven through the CLI as a user or CI job would."""

from __future__ import annotations

import json
import secrets

import pytest
import requests

from pipeline_plugin.cli import main
from pipeline_plugin.targets import DeploymentSpec, get_target

from .packages import SAMPLE, expected, package_dir


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    d = tmp_path / "state"
    monkeypatch.setenv("PIPELINE_PLUGIN_STATE_DIR", str(d))
    return d


@pytest.fixture
def service(state_dir):
    name = f"sums-{secrets.token_hex(3)}"
    yield name
    tgt = get_target("process")
    for env in ("staging", "production"):
        tgt.delete(name, env)


@pytest.fixture
def files(tmp_path):
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps(SAMPLE))

    def expect(version: int):
        p = tmp_path / f"expect-{version}.json"
        p.write_text(json.dumps(expected(version)))
        return p

    return sample, expect


def cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def score(uri: str):
    r = requests.post(uri, json={"data": SAMPLE}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def stage_version(capsys, tmp_path, service, files, version, **pkg):
    """Deploy a version to staging and smoke-test it there (recorded in the history)."""
    sample, expect = files
    dep = get_target("process").update(DeploymentSpec(service, "staging", str(package_dir(tmp_path, version, **pkg))))
    code, out, err = cli(capsys, "smoke-test", "--url", dep.scoring_uri, "--sample", str(sample), "--expect",
                         str(expect(version)), "--requests", "5", "--name", service, "--env", "staging",
                         "--target", "process", "--json")
    assert code == 0, out + err
    assert json.loads(out)["recorded"]["recorded"] is True
    return dep


def test_promote_needs_a_passing_staging_smoke_test(tmp_path, service, files, capsys):
    dep = get_target("process").create(DeploymentSpec(service, "staging", str(package_dir(tmp_path, 1))))
    code, _, err = cli(capsys, "promote", "--name", service, "--target", "process")
    assert code == 1
    assert "refusing to promote" in err and dep.image_id in err and "no passing smoke test" in err
    # a failing smoke test does not count either
    sample, expect = files
    code, _, _ = cli(capsys, "smoke-test", "--url", dep.scoring_uri, "--sample", str(sample), "--expect",
                     str(expect(2)), "--requests", "1", "--name", service, "--target", "process")
    assert code == 1
    code, _, err = cli(capsys, "promote", "--name", service, "--target", "process")
    assert code == 1 and "no passing smoke test" in err
    assert get_target("process").get(service, "production") is None
    code, _, err = cli(capsys, "promote", "--name", service, "--target", "process", "--strategy", "canary")
    assert code == 2 and "canary is not supported yet by target 'process'" in err


def test_promote_then_rollback_and_status(tmp_path, service, files, capsys):
    tgt = get_target("process")
    staging = stage_version(capsys, tmp_path, service, files, 1)
    code, out, err = cli(capsys, "promote", "--name", service, "--json")  # target from the history
    result = json.loads(out)
    assert code == 0, out + err
    assert result["status"] == "promoted" and result["version"] == "1"
    prod = tgt.get(service, "production")
    assert prod.image_id == staging.image_id  # the exact digest that passed staging
    assert score(prod.scoring_uri) == expected(1)
    assert result["smoke_test"]["passed"] is True

    staging2 = stage_version(capsys, tmp_path, service, files, 2)
    code, out, _ = cli(capsys, "promote", "--name", service, "--json")
    assert code == 0 and json.loads(out)["previous"]["version"] == "1"
    prod2 = tgt.get(service, "production")
    assert prod2.image_id == staging2.image_id and prod2.scoring_uri == prod.scoring_uri  # same stable address
    assert score(prod.scoring_uri) == expected(2)

    code, out, _ = cli(capsys, "status", "--name", service, "--json")
    status = json.loads(out)
    assert code == 0
    assert status["environments"]["production"]["version"] == "2"
    assert status["environments"]["production"]["image_id"] == staging2.image_id
    assert status["environments"]["staging"]["version"] == "2"
    promotes = [h for h in status["history"] if h["action"] == "promote"]
    assert [h["version"] for h in promotes] == ["2", "1"]
    assert all(h["cause"].startswith("user:") and h["status"] == "succeeded" for h in promotes)
    code, human, _ = cli(capsys, "status", "--name", service)
    assert "production" in human and "v2" in human and "history (newest first)" in human

    # a CI rollback job names the version it tried to promote: production serving another is left alone
    code, out, err = cli(capsys, "rollback", "--name", service, "--if-serving", "1", "--json")
    assert code == 0 and json.loads(out)["status"] == "unchanged", out + err
    assert "serves v2, not v1" in json.loads(out)["reason"] and score(prod.scoring_uri) == expected(2)
    code, out, err = cli(capsys, "rollback", "--name", service, "--env", "production", "--if-serving", "2", "--json")
    assert code == 0, out + err
    assert json.loads(out)["status"] == "rolled-back" and json.loads(out)["version"] == "1"
    assert tgt.get(service, "production").image_id == staging.image_id
    assert score(prod.scoring_uri) == expected(1)
    # the previous version is now 2 only by name: a plain rollback does not ping-pong
    code, _, err = cli(capsys, "rollback", "--name", service)
    assert code == 4 and "has no previous version" in err and "--to VERSION" in err
    code, out, _ = cli(capsys, "rollback", "--name", service, "--to", "2", "--json")
    assert code == 0 and json.loads(out)["version"] == "2"
    assert score(prod.scoring_uri) == expected(2)
    code, _, err = cli(capsys, "rollback", "--name", service, "--to", "7")
    assert code == 4 and "no version 7" in err and "v1" in err


def test_failed_production_check_rolls_back_automatically(tmp_path, service, files, capsys):
    tgt = get_target("process")
    stage_version(capsys, tmp_path, service, files, 1)
    assert cli(capsys, "promote", "--name", service)[0] == 0
    prod_uri = tgt.get(service, "production").scoring_uri
    marker = tmp_path / "dependency-missing"
    bad = stage_version(capsys, tmp_path, service, files, 3, fail_marker=marker)
    marker.write_text("production lacks something staging had")
    code, out, err = cli(capsys, "promote", "--name", service, "--json")
    result = json.loads(out)
    assert code == 1
    assert result["status"] == "rolled-back"
    assert "status: HTTP 500" in result["reason"] and "rolled back to the previous image" in result["reason"]
    assert tgt.get(service, "production").version == "1"
    assert tgt.get(service, "production").image_id != bad.image_id
    assert score(prod_uri) == expected(1)  # production answers with the previous version's predictions
    status = json.loads(cli(capsys, "status", "--name", service, "--json")[1])
    actions = [(h["action"], h["status"], h["version"]) for h in status["history"][:3]]
    assert actions == [("rollback", "succeeded", "1"), ("promote", "failed", "3"), ("smoke-test", "failed", "3")]
    # the pipeline's rollback job then runs for the failed promotion: it must not go back further than v1
    code, out, _ = cli(capsys, "rollback", "--name", service, "--if-serving", "3", "--json")
    assert code == 0 and json.loads(out)["status"] == "unchanged" and json.loads(out)["version"] == "1"
    assert tgt.get(service, "production").version == "1" and score(prod_uri) == expected(1)


def test_approval_gate_holds_until_approved(tmp_path, service, files, capsys):
    tgt = get_target("process")
    stage_version(capsys, tmp_path, service, files, 1)
    code, out, _ = cli(capsys, "promote", "--name", service, "--require-approval", "--run-id", f"run-{service}", "--json")
    assert code == 0 and json.loads(out)["status"] == "pending-approval"
    assert tgt.get(service, "production") is None
    code, out, _ = cli(capsys, "approve", "--list", "--json")
    assert [a["run_id"] for a in json.loads(out)["pending"]] == [f"run-{service}"]
    code, _, err = cli(capsys, "approve", "run-nope")
    assert code == 4 and f"run-{service}" in err
    code, out, err = cli(capsys, "approve", f"run-{service}", "--by", "alice", "--json")
    assert code == 0, out + err
    assert json.loads(out)["status"] == "promoted"
    assert score(tgt.get(service, "production").scoring_uri) == expected(1)
    code, _, err = cli(capsys, "approve", f"run-{service}")
    assert code == 1 and "not waiting for approval" in err
    status = json.loads(cli(capsys, "status", "--name", service, "--json")[1])
    assert "approved by alice" in status["environments"]["production"]["why"]
    # a rejected promotion never happens
    stage_version(capsys, tmp_path, service, files, 2)
    cli(capsys, "promote", "--name", service, "--require-approval", "--run-id", f"run2-{service}")
    code, _, _ = cli(capsys, "approve", f"run2-{service}", "--reject", "--by", "bob")
    assert code == 0
    assert tgt.get(service, "production").version == "1"
    # an approval is for the image the reviewer saw: staging moving on since is not approved
    stage_version(capsys, tmp_path, service, files, 4)
    cli(capsys, "promote", "--name", service, "--require-approval", "--run-id", f"run3-{service}")
    stage_version(capsys, tmp_path, service, files, 5)
    code, out, err = cli(capsys, "approve", f"run3-{service}", "--by", "carol", "--json")
    assert code == 1 and "the approval was for" in err and "nothing was promoted" in err, out + err
    assert tgt.get(service, "production").version == "1"
    assert score(tgt.get(service, "production").scoring_uri) == expected(1)


def test_a_first_promotion_keeps_stagings_key_requirement(tmp_path, service, files, capsys):
    sample, expect = files
    tgt = get_target("process")
    key = "k" + secrets.token_urlsafe(16)  # a key starting with "-" would read as a flag (use --key=VALUE for those)
    dep = tgt.update(DeploymentSpec(service, "staging", str(package_dir(tmp_path, 1)), keys=(key,)))
    code, out, err = cli(capsys, "smoke-test", "--url", dep.scoring_uri, "--key", key, "--sample", str(sample), "--expect",
                         str(expect(1)), "--requests", "5", "--name", service, "--env", "staging", "--target", "process")
    assert code == 0, out + err
    # no key given: production would answer anyone, so nothing is promoted
    code, _, err = cli(capsys, "promote", "--name", service)
    assert code == 2 and "staging requires a scoring key" in err and "--key" in err
    assert tgt.get(service, "production") is None
    code, out, err = cli(capsys, "promote", "--name", service, "--key", key, "--json")
    assert code == 0 and json.loads(out)["status"] == "promoted", out + err
    uri = tgt.get(service, "production").scoring_uri
    assert requests.post(uri, json={"data": [[1, 2]]}, timeout=10).status_code == 401


def test_production_gets_the_replicas_and_resources_staging_runs_with():
    from pipeline_plugin.stages.promote import spec_for
    from pipeline_plugin.targets import Deployment

    staging = Deployment(service="s", env="staging", image="m:1", image_id="sha256:" + "b" * 64,
                         scoring_uri="http://127.0.0.1:1/score", swagger_uri="", health_uri="",
                         details={"replicas": 3, "cpu_cores": 0.5, "memory_gb": 1.0, "environment": {"A": "1"}})
    spec = spec_for(staging, "production", staging.image_id, 8891, ("k",), {})
    assert (spec.replicas, spec.cpu_cores, spec.memory_gb, spec.keys) == (3, 0.5, 1.0, ("k",))
    assert spec.environment["A"] == "1" and spec.env == "production"


def test_a_smoke_test_of_a_local_staging_url_counts_for_promote(tmp_path, service, files, capsys):
    """As the README shows it: smoke-test --url (no --name), then promote."""
    sample, expect = files
    tgt = get_target("process")
    dep = tgt.update(DeploymentSpec(service, "staging", str(package_dir(tmp_path, 1))))
    code, out, err = cli(capsys, "smoke-test", "--url", dep.scoring_uri, "--sample", str(sample), "--expect",
                         str(expect(1)), "--requests", "5", "--json")
    assert code == 0, out + err
    assert json.loads(out)["recorded"]["image_id"] == dep.image_id
    code, out, err = cli(capsys, "promote", "--name", service, "--json")
    assert code == 0 and json.loads(out)["status"] == "promoted", out + err


def test_a_rollback_checks_the_restored_version_with_its_recorded_smoke_test(tmp_path, service, files, capsys):
    tgt = get_target("process")
    marker = tmp_path / "v1-breaks"
    stage_version(capsys, tmp_path, service, files, 1, fail_marker=marker)
    assert cli(capsys, "promote", "--name", service)[0] == 0
    stage_version(capsys, tmp_path, service, files, 2)
    assert cli(capsys, "promote", "--name", service)[0] == 0
    # v1 breaks in the meantime (a dependency it needs is gone): the rollback says so, exit 1
    marker.write_text("gone")
    code, out, err = cli(capsys, "rollback", "--name", service, "--json")
    result = json.loads(out)
    assert code == 1 and result["status"] == "failed", out + err
    assert "the restored version now fails its smoke test" in result["reason"] and "--to VERSION" in result["reason"]
    assert result["smoke_test"]["passed"] is False and tgt.get(service, "production").version == "1"
    # working again: a rollback to v2 passes its check
    marker.unlink()
    code, out, err = cli(capsys, "rollback", "--name", service, "--to", "2", "--json")
    assert code == 0 and json.loads(out)["smoke_test"]["passed"] is True, out + err
    history = json.loads(cli(capsys, "status", "--name", service, "--json")[1])["history"]
    assert [(h["action"], h["status"], h["version"]) for h in history[:2]] == [("smoke-test", "passed", "2"),
                                                                               ("rollback", "succeeded", "2")]
