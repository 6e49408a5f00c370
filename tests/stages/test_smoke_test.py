"""smoke-test against the real scoring runtime running as a local process."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from pipeline_plugin.cli import main
from pipeline_plugin.stages.smoke_test import compare, output_schema, smoke_test

from .runtime_proc import FLAKY_SCRIPT, GOOD_SCRIPT, RAISING_SCRIPT, SCHEMA_BREAKING_SCRIPT, SLOW_SCRIPT, free_port, runtime

SAMPLE = [[1.0, 2.0], [3.0, 4.5]]


@pytest.fixture
def files(tmp_path):
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps(SAMPLE))
    expect = tmp_path / "expected.json"
    expect.write_text(json.dumps([3.0, 7.5]))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([3.0, 9.0]))
    return sample, expect, wrong


def run_cli(capsys, *argv):
    code = main(["smoke-test", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_passing_sample_exits_0_and_writes_junit(tmp_path, files, capsys):
    sample, expect, _ = files
    junit = tmp_path / "junit.xml"
    with runtime(tmp_path, GOOD_SCRIPT.replace("{factor}", "1")) as url:
        code, out, _ = run_cli(capsys, "--url", url, "--sample", str(sample), "--expect", str(expect),
                               "--requests", "10", "--p99-ms", "2000", "--junit", str(junit), "--json")
    report = json.loads(out)
    assert code == 0, out
    assert report["passed"] is True
    assert [c["name"] for c in report["checks"]] == ["status", "schema", "expected", "error_rate", "latency_p99"]
    assert report["requests"] == 10 and report["errors"] == 0
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["status", "schema", "expected", "error_rate", "latency_p99"]
    assert suite.get("failures") == "0"
    assert all(c.find("failure") is None for c in cases)


def test_wrong_expected_values_fail_naming_the_value(tmp_path, files, capsys):
    sample, _, wrong = files
    junit = tmp_path / "junit.xml"
    with runtime(tmp_path, GOOD_SCRIPT.replace("{factor}", "1")) as url:
        code, out, _ = run_cli(capsys, "--url", url, "--sample", str(sample), "--expect", str(wrong),
                               "--requests", "3", "--junit", str(junit))
        # within tolerance it passes
        code_tol, _, _ = run_cli(capsys, "--url", url, "--sample", str(sample), "--expect", str(wrong),
                                 "--tolerance", "1.6", "--requests", "1")
    assert code == 1
    assert "[FAIL] expected" in out and "$[1]: expected 9.0, got 7.5" in out
    assert "[ok  ] status" in out and "[ok  ] schema" in out
    failed = [c for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["expected"]
    assert code_tol == 0


def test_schema_breaking_output_fails_the_schema_check(tmp_path, files, capsys):
    sample, _, _ = files
    with runtime(tmp_path, SCHEMA_BREAKING_SCRIPT) as url:
        code, out, _ = run_cli(capsys, "--url", url, "--sample", str(sample), "--requests", "2", "--json")
    report = json.loads(out)
    assert code == 1
    assert report["failed"] == ["schema"]
    schema = next(c for c in report["checks"] if c["name"] == "schema")
    assert "swagger output schema" in schema["message"] and "oops" in schema["message"]


def test_raising_run_fails_status_and_error_rate(tmp_path, files, capsys):
    sample, expect, _ = files
    with runtime(tmp_path, RAISING_SCRIPT) as url:
        code, out, _ = run_cli(capsys, "--url", url, "--sample", str(sample), "--expect", str(expect), "--requests", "4")
    assert code == 1
    assert "[FAIL] status: HTTP 500" in out
    assert "[FAIL] error_rate: 4/4 requests failed" in out


def test_error_rate_budget(tmp_path, files):
    with runtime(tmp_path, FLAKY_SCRIPT) as url:
        strict = smoke_test(url, SAMPLE, requests_count=9)
        lenient = smoke_test(url, SAMPLE, requests_count=9, max_error_rate=0.5)
    assert strict.errors == 3 and not strict.passed
    assert strict.failed_checks[0].name == "error_rate" and "3/9" in strict.failed_checks[0].message
    assert lenient.passed, lenient.human()


def test_latency_budget(tmp_path):
    with runtime(tmp_path, SLOW_SCRIPT) as url:
        report = smoke_test(url, SAMPLE, requests_count=3, p99_ms=50)
    assert [c.name for c in report.failed_checks] == ["latency_p99"]
    assert report.p99_ms >= 120


def test_scoring_key(tmp_path, files, capsys, monkeypatch):
    sample, _, _ = files
    with runtime(tmp_path, GOOD_SCRIPT.replace("{factor}", "1"), keys="s3cret-key") as url:
        without = smoke_test(url, SAMPLE, requests_count=1)
        monkeypatch.setenv("PIPELINE_PLUGIN_SCORING_KEY", "s3cret-key")
        code, out, err = run_cli(capsys, "--url", url, "--sample", str(sample), "--requests", "2")
    assert not without.passed and "HTTP 401" in without.checks[0].message
    assert code == 0, out
    assert "s3cret-key" not in out + err


def test_bad_arguments_exit_2_naming_the_flag(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--url", "http://127.0.0.1:1/score", "--sample", str(tmp_path / "nope.json"))
    assert code == 2 and "--sample file" in err and "nope.json" in err
    (tmp_path / "s.json").write_text("[1]")
    code, _, err = run_cli(capsys, "--url", "ftp://x/score", "--sample", str(tmp_path / "s.json"))
    assert code == 2 and "--url" in err
    code, _, err = run_cli(capsys, "--url", "http://127.0.0.1:1/score", "--sample", str(tmp_path / "s.json"), "--requests", "0")
    assert code == 2 and "--requests" in err


def test_unreachable_service_is_a_failed_check(tmp_path):
    report = smoke_test(f"http://127.0.0.1:{free_port()}/score", SAMPLE, requests_count=2, timeout=2)
    assert not report.passed
    assert report.checks[0].name == "status" and "no answer" in report.checks[0].message


def test_compare_numbers_within_tolerance_recursively():
    assert compare({"p": [0.1, 0.2], "label": "yes"}, {"p": [0.1000001, 0.2], "label": "yes"}, 1e-5) == []
    assert compare([1, 2], [1, 2, 3], 0) == ["$: expected 2 items, got 3"]
    assert compare({"a": 1}, {"a": 1, "b": 2}, 0) == ["$.b: not expected, got 2"]
    assert compare([True], [1], 0) == ["$[0]: expected True, got 1"]
    assert compare({"a": {"b": 1.0}}, {"a": {"b": 1.5}}, 0.1) == ["$.a.b: expected 1.0, got 1.5 (tolerance 0.1)"]


def test_output_schema_openapi3():
    doc = {"openapi": "3.0.1", "paths": {"/score": {"post": {"responses": {"200": {"content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ServiceOutput"}}}}}}}},
        "components": {"schemas": {"ServiceOutput": {"type": "array"}}}}
    assert output_schema(doc) == {"$ref": "#/components/schemas/ServiceOutput"}
    from pipeline_plugin.stages.smoke_test import validate_output

    assert validate_output(doc, [1]) == []
    assert validate_output(doc, "x") and "is not of type 'array'" in validate_output(doc, "x")[0]


def test_undecorated_script_has_no_declared_schema(tmp_path):
    with runtime(tmp_path, SLOW_SCRIPT) as url:
        report = smoke_test(url, SAMPLE, requests_count=1)
    schema = next(c for c in report.checks if c.name == "schema")
    assert report.passed and schema.skipped and "declares no output schema" in schema.message
