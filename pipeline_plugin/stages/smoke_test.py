"""The smoke-test stage: prove a deployed service works before (and after) it takes traffic.

``smoke_test(url, sample, ...)`` posts the sample to ``POST /score`` and checks, each as a named
check in the returned :class:`SmokeReport`:

- ``status``: the first request answers 200 with a JSON body;
- ``schema``: the body validates against the output schema in the service's ``/swagger.json``;
- ``expected``: (with ``expect``) the body equals the expected output, numbers within ``tolerance``;
- ``error_rate``: over ``requests`` requests, the share of failures is at most ``max_error_rate``;
- ``latency_p99``: (with ``p99_ms``) the 99th percentile latency is within budget.

``promote`` reuses it on production after the switch.
"""

from __future__ import annotations

import json
import math
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import requests

from ..errors import ConfigError

DEFAULT_TOLERANCE = 1e-6
DEFAULT_REQUESTS = 20
#: how many value mismatches a report lists before it says "and N more"
MAX_MISMATCHES = 10


@dataclass
class Check:
    name: str
    passed: bool
    message: str
    skipped: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SmokeReport:
    url: str
    checks: list[Check] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    response: Any = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def reason(self) -> str:
        """One line naming each failed check, for histories and rollback reports."""
        return "; ".join(f"{c.name}: {c.message}" for c in self.failed_checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
            "failed": [c.name for c in self.failed_checks],
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "seconds": self.seconds,
        }

    def human(self) -> str:
        lines = [f"smoke test of {self.url}: {'PASSED' if self.passed else 'FAILED'}"]
        for c in self.checks:
            mark = "skip" if c.skipped else ("ok  " if c.passed else "FAIL")
            lines.append(f"  [{mark}] {c.name}: {c.message}")
        if self.p99_ms is not None:
            lines.append(f"  {self.requests} requests, {self.errors} failed, p50 {self.p50_ms} ms, p99 {self.p99_ms} ms")
        return "\n".join(lines)

    def junit_xml(self) -> str:
        """JUnit XML, one testcase per check, as CI test tabs read it."""
        suite = ET.Element(
            "testsuite",
            name="pipeline-plugin smoke-test",
            tests=str(len(self.checks)),
            failures=str(len(self.failed_checks)),
            errors="0",
            skipped=str(sum(1 for c in self.checks if c.skipped)),
            time=f"{self.seconds:.3f}",
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="url", value=self.url)
        for c in self.checks:
            case = ET.SubElement(suite, "testcase", classname="smoke-test", name=c.name, time=f"{c.seconds:.3f}")
            if c.skipped:
                ET.SubElement(case, "skipped", message=c.message)
            elif not c.passed:
                failure = ET.SubElement(case, "failure", message=c.message, type="SmokeTestFailure")
                failure.text = c.message
            else:
                out = ET.SubElement(case, "system-out")
                out.text = c.message
        root = ET.Element("testsuites")
        root.append(suite)
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---- inputs ---------------------------------------------------------------------------------
def load_json_file(path: str | Path, flag: str) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{flag} file {str(p)!r} does not exist; pass the path of a JSON file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag} file {str(p)!r} is not valid JSON ({exc}); fix the file") from None


def request_body(sample: Any) -> Any:
    """A sample is posted as ``{"data": ...}``; a sample that already has ``data`` goes as is."""
    if isinstance(sample, dict) and "data" in sample:
        return sample
    return {"data": sample}


def base_url(url: str) -> str:
    """``http://h:p/score`` -> ``http://h:p``; a URL without ``/score`` is taken as the base."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--url {url!r} is not an http(s) URL; pass the scoring URI, e.g. http://127.0.0.1:8890/score")
    path = parts.path.rstrip("/")
    if path.endswith("/score"):
        path = path[: -len("/score")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def scoring_url(url: str) -> str:
    return base_url(url) + "/score"


# ---- schema ---------------------------------------------------------------------------------
#: what Azure ML's inference server (and our runtime) puts in the swagger of a script without
#: ``@output_schema``: a placeholder, not a declaration
UNDECLARED_SCHEMA = {"type": "object", "example": {}}


def _resolve(swagger: dict, schema: Any) -> Any:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = swagger
        for part in ref[2:].split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        return node if node is not None else schema
    return schema


def output_schema(swagger: dict) -> dict | None:
    """The 200 response schema of ``POST /score`` (Swagger 2 or OpenAPI 3), refs resolved by the
    validator against the whole document; None when the service declares none (no schema, or the
    placeholder an undecorated entry script gets)."""
    schema = _output_schema(swagger)
    if schema is None or _resolve(swagger, schema) == UNDECLARED_SCHEMA:
        return None
    return schema


def _output_schema(swagger: dict) -> dict | None:
    score = None
    for path, ops in (swagger.get("paths") or {}).items():
        if path.rstrip("/").endswith("/score") and isinstance(ops, dict) and "post" in ops:
            score = ops["post"]
            break
    schema = None
    if score:
        resp = (score.get("responses") or {}).get("200") or (score.get("responses") or {}).get(200) or {}
        schema = resp.get("schema")
        if schema is None:
            content = resp.get("content") or {}
            media = content.get("application/json") or next(iter(content.values()), {})
            schema = media.get("schema") if isinstance(media, dict) else None
    if schema is None:
        schema = (swagger.get("definitions") or {}).get("ServiceOutput")
    if schema is None:
        schema = ((swagger.get("components") or {}).get("schemas") or {}).get("ServiceOutput")
    return schema or None


def validate_output(swagger: dict, body: Any) -> list[str]:
    """Problems of ``body`` against the swagger's output schema (empty: valid)."""
    import jsonschema

    schema = output_schema(swagger)
    if schema is None:
        return []
    # refs like #/definitions/X resolve against the whole swagger document
    wrapped = dict(schema)
    for key in ("definitions", "components"):
        if key in swagger and key not in wrapped:
            wrapped[key] = swagger[key]
    validator_cls = jsonschema.validators.validator_for(wrapped, default=jsonschema.Draft4Validator)
    validator = validator_cls(wrapped)
    problems = []
    for err in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        problems.append(f"{where}: {err.message}")
    return problems


# ---- expected values ------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compare(expected: Any, actual: Any, tolerance: float, path: str = "$") -> list[str]:
    """Differences between expected and actual: numbers within ``tolerance`` (absolute), lists
    element by element, objects key by key, anything else equal."""
    if _is_number(expected) and _is_number(actual):
        if math.isnan(float(expected)) and math.isnan(float(actual)):
            return []
        if abs(float(expected) - float(actual)) <= tolerance:
            return []
        return [f"{path}: expected {expected!r}, got {actual!r} (tolerance {tolerance:g})"]
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: expected {len(expected)} items, got {len(actual)}"]
        out: list[str] = []
        for i, (e, a) in enumerate(zip(expected, actual)):
            out.extend(compare(e, a, tolerance, f"{path}[{i}]"))
        return out
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in expected:
            if key not in actual:
                out.append(f"{path}.{key}: missing from the response")
            else:
                out.extend(compare(expected[key], actual[key], tolerance, f"{path}.{key}"))
        for key in actual:
            if key not in expected:
                out.append(f"{path}.{key}: not expected, got {actual[key]!r}")
        return out
    if expected == actual and type(expected) is type(actual):
        return []
    return [f"{path}: expected {expected!r}, got {actual!r}"]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# ---- the stage ------------------------------------------------------------------------------
def smoke_test(
    url: str,
    sample: Any,
    *,
    key: str | None = None,
    expect: Any = None,
    has_expect: bool | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    requests_count: int = DEFAULT_REQUESTS,
    p99_ms: float | None = None,
    max_error_rate: float = 0.0,
    timeout: float = 30.0,
    swagger_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> SmokeReport:
    """Run the checks against ``url`` (the scoring URI) and return the report; never raises for a
    failing service (a failure is a failed check), only ``ConfigError`` for bad arguments."""
    say = progress or (lambda _m: None)
    if requests_count < 1:
        raise ConfigError(f"--requests must be at least 1, got {requests_count}")
    if tolerance < 0:
        raise ConfigError(f"--tolerance must be >= 0, got {tolerance}")
    if not 0 <= max_error_rate <= 1:
        raise ConfigError(f"--max-error-rate must be between 0 and 1, got {max_error_rate}")
    if has_expect is None:
        has_expect = expect is not None
    score_url = scoring_url(url)
    report = SmokeReport(url=score_url)
    started = time.monotonic()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = json.dumps(request_body(sample))
    session = requests.Session()

    def post() -> tuple[requests.Response | None, str | None, float]:
        t0 = time.monotonic()
        try:
            resp = session.post(score_url, data=body, headers=headers, timeout=timeout)
            return resp, None, (time.monotonic() - t0) * 1000
        except requests.RequestException as exc:
            return None, f"{type(exc).__name__}: {exc}", (time.monotonic() - t0) * 1000

    # 1. status
    say(f"smoke test: POST {score_url}")
    t0 = time.monotonic()
    resp, err, first_ms = post()
    latencies = [first_ms]
    errors = 0
    payload: Any = None
    ok_json = False
    if resp is None:
        status_check = Check("status", False, f"no answer from {score_url}: {err}")
        errors += 1
    elif resp.status_code != 200:
        text = resp.text[:300].replace("\n", " ")
        status_check = Check("status", False, f"HTTP {resp.status_code} from POST /score, expected 200: {text}")
        errors += 1
    else:
        try:
            payload = resp.json()
            ok_json = True
            status_check = Check("status", True, f"HTTP 200 in {first_ms:.0f} ms")
        except ValueError:
            status_check = Check("status", False, f"HTTP 200 but the body is not JSON: {resp.text[:200]!r}")
            errors += 1
    status_check.seconds = round(time.monotonic() - t0, 3)
    report.checks.append(status_check)
    report.response = payload

    # 2. schema
    t0 = time.monotonic()
    swagger_at = swagger_url or base_url(url) + "/swagger.json"
    if not ok_json:
        schema_check = Check("schema", False, "no JSON output to validate (see the status check)")
    else:
        try:
            sw = session.get(swagger_at, headers=headers, timeout=timeout)
            if sw.status_code != 200:
                schema_check = Check("schema", False, f"GET {swagger_at} answered HTTP {sw.status_code}, expected 200")
            else:
                swagger = sw.json()
                if output_schema(swagger) is None:
                    schema_check = Check("schema", True, f"{swagger_at} declares no output schema (the entry script has no @output_schema)", skipped=True)
                else:
                    problems = validate_output(swagger, payload)
                    if problems:
                        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
                        schema_check = Check(
                            "schema", False, "output breaks the service's swagger output schema: " + "; ".join(problems[:3]) + more
                        )
                    else:
                        schema_check = Check("schema", True, "output matches the swagger output schema")
        except requests.RequestException as exc:
            schema_check = Check("schema", False, f"GET {swagger_at} failed: {exc}")
        except ValueError:
            schema_check = Check("schema", False, f"{swagger_at} is not JSON")
    schema_check.seconds = round(time.monotonic() - t0, 3)
    report.checks.append(schema_check)

    # 3. expected values
    if has_expect:
        t0 = time.monotonic()
        if not ok_json:
            exp_check = Check("expected", False, "no JSON output to compare (see the status check)")
        else:
            diffs = compare(expect, payload, tolerance)
            if diffs:
                more = f" (and {len(diffs) - MAX_MISMATCHES} more)" if len(diffs) > MAX_MISMATCHES else ""
                exp_check = Check(
                    "expected", False, f"{len(diffs)} value(s) differ: " + "; ".join(diffs[:MAX_MISMATCHES]) + more
                )
            else:
                exp_check = Check("expected", True, f"output equals the expected values (tolerance {tolerance:g})")
        exp_check.seconds = round(time.monotonic() - t0, 3)
        report.checks.append(exp_check)

    # 4. error rate and latency over N requests
    t0 = time.monotonic()
    if requests_count > 1:
        say(f"smoke test: {requests_count} requests for error rate and latency")
    failures: dict[str, int] = {}
    for _ in range(requests_count - 1):
        r, e, ms = post()
        latencies.append(ms)
        if r is None or r.status_code != 200:
            errors += 1
            what = e.split(":")[0] if e else f"HTTP {r.status_code}"
            failures[what] = failures.get(what, 0) + 1
    if resp is None or (resp is not None and resp.status_code != 200):
        what = err.split(":")[0] if err else f"HTTP {resp.status_code}"
        failures[what] = failures.get(what, 0) + 1
    session.close()
    report.requests = requests_count
    report.errors = errors
    rate = errors / requests_count
    report.p50_ms = round(percentile(latencies, 50), 1)
    report.p99_ms = round(percentile(latencies, 99), 1)
    what = ", ".join(f"{n}x {k}" for k, n in sorted(failures.items()))
    if rate <= max_error_rate:
        rate_check = Check("error_rate", True, f"{errors}/{requests_count} requests failed (budget {max_error_rate:.0%})")
    else:
        rate_check = Check(
            "error_rate", False, f"{errors}/{requests_count} requests failed ({rate:.0%}, budget {max_error_rate:.0%}): {what}"
        )
    rate_check.seconds = round(time.monotonic() - t0, 3)
    report.checks.append(rate_check)
    if p99_ms is not None:
        if report.p99_ms <= p99_ms:
            report.checks.append(Check("latency_p99", True, f"p99 {report.p99_ms} ms within the {p99_ms:g} ms budget"))
        else:
            report.checks.append(
                Check("latency_p99", False, f"p99 {report.p99_ms} ms is over the {p99_ms:g} ms budget (p50 {report.p50_ms} ms)")
            )
    report.seconds = round(time.monotonic() - started, 3)
    say(f"smoke test: {'passed' if report.passed else 'FAILED: ' + report.reason()}")
    return report
