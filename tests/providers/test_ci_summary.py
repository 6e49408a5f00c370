"""`pipeline-plugin ci-summary`: the smoke-test and promotion reports a person reads in the job summary,
from the JSON the stage commands really print."""

from __future__ import annotations

import json

from pipeline_plugin.cli import main
from pipeline_plugin.stages.smoke_test import Check, SmokeReport


def test_smoke_test_result_becomes_a_table_with_latency_and_error_rate(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    report = SmokeReport(url="http://127.0.0.1:8890/score", requests=50, errors=1, p50_ms=4.2, p99_ms=31.0,
                         checks=[Check("status", True, "200 OK"), Check("schema", False, "output[0] is a string")])
    result = tmp_path / "smoke.json"
    result.write_text(json.dumps(report.to_dict()) + "\n::error::smoke test of http://127.0.0.1:8890/score failed\n")
    assert main(["ci-summary", "--stage", "smoke-test", "--result", str(result), "--model", "iris", "--version", "7"]) == 0
    text = summary.read_text()
    assert text.startswith("### Smoke test")
    assert "| model | `iris` |" in text and "| version | `7` |" in text
    assert "| outcome | `failed: schema` |" in text
    assert "| latency | p50 4.2 ms, p99 31.0 ms |" in text and "| error rate | 2.00% |" in text
    assert "| `status` | ✅ passed | `200 OK` |" in text and "| `schema` | ❌ failed | `output[0] is a string` |" in text


def test_promotion_result_says_what_was_promoted(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = tmp_path / "promote.json"
    result.write_text(json.dumps({"stage": "promote", "service": "iris", "env": "production", "status": "promoted",
                                  "image_id": "sha256:abc", "model": "iris", "version": "7",
                                  "scoring_uri": "http://h:8891/score", "previous": None, "reason": ""}))
    assert main(["ci-summary", "--stage", "promote", "--result", str(result)]) == 0
    text = summary.read_text()
    assert "### Promotion: production" in text and "| outcome | `promoted` |" in text and "sha256:abc" in text


def test_unreadable_result_only_warns(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert main(["ci-summary", "--stage", "deploy", "--result", str(tmp_path / "none.json")]) == 0
    assert "::warning::no summary for deploy" in capsys.readouterr().out


def test_set_outputs_publishes_what_the_stage_did_not(tmp_path, monkeypatch):
    from pipeline_plugin.stages.package import PackageResult  # the package command's real --json shape

    fields = PackageResult.__dataclass_fields__
    kwargs = {name: None for name in fields}
    kwargs.update(image="localhost:5000/models/iris:7", image_id="sha256:1", digest="sha256:feed", labels={})
    result = tmp_path / "package.json"
    result.write_text(json.dumps(PackageResult(**kwargs).to_dict()))
    monkeypatch.setenv("GITLAB_CI", "true")
    monkeypatch.setenv("PIPELINE_PLUGIN_DOTENV", str(tmp_path / "pipeline-plugin.env"))
    assert main(["ci-summary", "--stage", "package", "--result", str(result), "--set-outputs", "--no-summary"]) == 0
    assert (tmp_path / "pipeline-plugin.env").read_text() == "IMAGE=localhost:5000/models/iris:7\nDIGEST=sha256:feed\n"

    # under GitHub, an output the stage already wrote is left alone
    monkeypatch.delenv("GITLAB_CI")
    out = tmp_path / "github_output"
    out.write_text("image<<EOF_1\nlocalhost:5000/models/iris:7\nEOF_1\n")
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    assert main(["ci-summary", "--stage", "package", "--result", str(result), "--set-outputs", "--no-summary"]) == 0
    text = out.read_text()
    assert text.count("image<<") == 1 and "digest<<" in text and "sha256:feed" in text
