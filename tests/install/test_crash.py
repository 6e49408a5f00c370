"""A crash (any exception that is not one of the tool's own errors: a bug, a missing module) exits
3, never 1 (1 means the checks failed), with an ``::error::`` annotation naming the error, a --json
result naming it, and a CI summary reading "failed: <the error>"."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline_plugin import cli

from .scoring_server import scoring_server

CI_VARS = ("GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "TF_BUILD", "GITLAB_CI")


def _parser_with_failing_command(exc: BaseException):
    def build() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="pipeline-plugin")
        sub = parser.add_subparsers(dest="command", required=True)
        boom = sub.add_parser("boom")
        boom.add_argument("--json", action="store_true")

        def run(_args: argparse.Namespace) -> int:
            raise exc

        boom.set_defaults(func=run)
        return parser

    return build


def test_an_exception_in_a_command_exits_3_with_an_annotation(monkeypatch, capsys):
    for var in CI_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setattr(cli, "build_parser", _parser_with_failing_command(KeyError("scoring_uri")))
    assert cli.main(["boom", "--json"]) == 3
    out, err = capsys.readouterr()
    result = json.loads(out.splitlines()[0])
    assert result["error"] == "KeyError" and "scoring_uri" in result["message"]
    assert "::error::pipeline-plugin crashed: KeyError: 'scoring_uri'" in out
    assert "Traceback" in err and "error: pipeline-plugin crashed: KeyError" in err


def test_a_command_module_that_cannot_be_imported_exits_3(tmp_path):
    """The parser imports every command module: one that fails to import is a crash too."""
    code = ("import sys; sys.modules['pipeline_plugin.commands.status'] = None\n"
            "from pipeline_plugin.cli import main; sys.exit(main(['--version']))")
    env = {k: v for k, v in os.environ.items() if k not in CI_VARS}
    env["GITHUB_ACTIONS"] = "true"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "::error::pipeline-plugin crashed: ModuleNotFoundError" in proc.stdout
    assert "pipeline_plugin.commands.status" in proc.stdout


def test_smoke_test_without_jsonschema_crashes_with_exit_3_and_the_summary_names_it(tmp_path):
    """The original bug: smoke-test in an environment where jsonschema cannot be imported. The
    action's path: the stage's --json result goes to ci-summary, whose summary names the error."""
    sample = tmp_path / "sample.json"
    sample.write_text("[[1, 2]]")
    result = tmp_path / "result.json"
    summary = tmp_path / "summary.md"
    env = {k: v for k, v in os.environ.items() if k not in CI_VARS}
    env.update(GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary), PIPELINE_PLUGIN_STATE_DIR=str(tmp_path / "state"))
    code = ("import sys; sys.modules['jsonschema'] = None\n"
            "from pipeline_plugin.cli import main; sys.exit(main(sys.argv[1:]))")
    with scoring_server() as url:
        proc = subprocess.run([sys.executable, "-c", code, "smoke-test", "--url", url, "--sample", str(sample),
                               "--requests", "1", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "::error::pipeline-plugin crashed: ModuleNotFoundError" in proc.stdout
    assert "jsonschema" in proc.stdout.split("::error::", 1)[1]
    result.write_text(proc.stdout)
    done = subprocess.run([sys.executable, "-m", "pipeline_plugin.cli", "ci-summary", "--stage", "smoke-test",
                           "--result", str(result)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = summary.read_text()
    assert "failed: pipeline-plugin crashed: ModuleNotFoundError" in text and "jsonschema" in text, text


def test_a_failed_check_still_exits_1_and_a_passing_run_0(tmp_path):
    """The other side of the contract: exit 1 stays "checks failed" (not a crash)."""
    sample = tmp_path / "sample.json"
    sample.write_text("[[1, 2]]")
    expect_ok, expect_bad = tmp_path / "ok.json", tmp_path / "bad.json"
    expect_ok.write_text(json.dumps({"result": [3.0]}))
    expect_bad.write_text(json.dumps({"result": [4.0]}))
    env = {k: v for k, v in os.environ.items() if k not in CI_VARS}
    env["PIPELINE_PLUGIN_STATE_DIR"] = str(tmp_path / "state")
    with scoring_server() as url:
        runs = [subprocess.run([sys.executable, "-m", "pipeline_plugin.cli", "smoke-test", "--url", url, "--sample",
                                str(sample), "--requests", "2", "--expect", str(expect)], env=env, capture_output=True,
                               text=True, timeout=120) for expect in (expect_ok, expect_bad)]
    assert [r.returncode for r in runs] == [0, 1], [r.stderr for r in runs]
    assert "crashed" not in runs[1].stderr


def test_under_azure_pipelines_the_crash_is_a_logissue(monkeypatch, capsys):
    for var in CI_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TF_BUILD", "True")
    monkeypatch.setattr(cli, "build_parser", _parser_with_failing_command(RuntimeError("disk; full]")))
    assert cli.main(["boom"]) == 3
    out = capsys.readouterr().out
    # the message escaped as Azure expects (; and ] would end the command)
    assert "##vso[task.logissue type=error]pipeline-plugin crashed: RuntimeError: disk%3B full%5D" in out
