"""`pipeline-plugin smoke-test`: prove a deployed scoring service works (status, swagger output
schema, expected values, error rate, p99 latency); exit 0 when every check holds, 1 otherwise."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..ci import output as ci_output
from ..history import History, Record, current_actor, use_state_dir
from ..output import Progress, add_json_flag, emit
from ..stages import smoke_test as stage
from ..store import add_database_url_flag, use_database_url

KEY_ENV = "PIPELINE_PLUGIN_SCORING_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "smoke-test",
        help="check a scoring service: status, output schema, expected values, error rate, latency",
        description="POST the sample to the service's /score and check it. Exit 0 when every check holds, "
        "1 with a report naming each failed check.",
    )
    p.add_argument("--url", required=True, help="the scoring URI (http://host:port/score)")
    p.add_argument("--key", help=f"scoring key sent as 'Authorization: Bearer KEY' (default: ${KEY_ENV})")
    p.add_argument("--sample", required=True, type=Path, help="JSON input; posted as {\"data\": ...}")
    p.add_argument("--expect", type=Path, help="JSON file with the expected output")
    p.add_argument("--tolerance", type=float, default=stage.DEFAULT_TOLERANCE,
                   help=f"absolute tolerance for numbers in --expect (default {stage.DEFAULT_TOLERANCE:g})")
    p.add_argument("--requests", type=int, default=stage.DEFAULT_REQUESTS,
                   help=f"requests sent for the error rate and latency checks (default {stage.DEFAULT_REQUESTS})")
    p.add_argument("--p99-ms", type=float, help="p99 latency budget in milliseconds")
    p.add_argument("--max-error-rate", type=float, default=0.0, help="allowed share of failed requests (default 0)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    p.add_argument("--junit", type=Path, help="write JUnit XML (one testcase per check) to this file")
    p.add_argument("--name", help="service name: record the result in the deployment history (promote needs it; "
                   "default: the local docker or process deployment whose scoring URI is --url)")
    p.add_argument("--env", default="staging", help="environment of --name (default staging)")
    p.add_argument("--target", help="deploy target of --name (default: from the history, else docker/process)")
    p.add_argument("--state-dir", type=Path, help="state dir (default $PIPELINE_PLUGIN_STATE_DIR)")
    add_database_url_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    use_state_dir(args.state_dir)
    use_database_url(args.database_url)
    sample = stage.load_json_file(args.sample, "--sample")
    expect = stage.load_json_file(args.expect, "--expect") if args.expect else None
    key = args.key or os.environ.get(KEY_ENV) or None
    progress = Progress(enabled=not args.json)
    report = stage.smoke_test(
        args.url, sample, key=key, expect=expect, has_expect=args.expect is not None, tolerance=args.tolerance,
        requests_count=args.requests, p99_ms=args.p99_ms, max_error_rate=args.max_error_rate,
        timeout=args.timeout, progress=progress,
    )
    if args.junit:
        args.junit.parent.mkdir(parents=True, exist_ok=True)
        args.junit.write_text(report.junit_xml())
    data = report.to_dict()
    if not args.name:
        found = deployment_at(args.url, args.target)
        if found is not None:  # a local deployment serves this URL: the result counts for promote
            args.name, args.env, args.target = found.service, found.env, found.details.get("target") or args.target
    if args.name:
        data["recorded"] = record(args, report, sample, expect)
    ci_output.set_outputs({"smoke-test": "passed" if report.passed else "failed"})
    if not report.passed:
        ci_output.report_error(f"smoke test of {report.url} failed: {report.reason()}")
    emit(args, data, report.human())
    return 0 if report.passed else 1


LOCAL_TARGETS = ("docker", "process")


def deployment_at(url: str, target: str | None):
    """The local (docker or process) deployment whose scoring URI is ``url``, if exactly one is."""
    from ..targets import get_target

    want = stage.base_url(url)
    found = []
    for name in [t for t in ([target] if target else LOCAL_TARGETS) if t in LOCAL_TARGETS]:
        try:
            deployments = get_target(name).list()
        except Exception:  # noqa: BLE001 - no Docker Engine, no state yet: nothing to find there
            continue
        found += [d for d in deployments if stage.base_url(d.scoring_uri) == want]
    return found[0] if len(found) == 1 else None


def record(args: argparse.Namespace, report: stage.SmokeReport, sample, expect) -> dict:
    """Record the result against the image the environment runs, so that promote can trust it."""
    from ..stages.promote import resolve_target
    from ..targets import get_target

    history = History(args.state_dir)
    target_name = resolve_target(args.name, args.env, history, args.target)
    dep = get_target(target_name).get(args.name, args.env)
    if dep is None:
        return {"recorded": False, "why": f"no {args.env} deployment of {args.name} on target {target_name}"}
    if stage.base_url(dep.scoring_uri) != stage.base_url(args.url):
        return {"recorded": False,
                "why": f"--url {args.url} is not {args.name} {args.env}'s scoring URI {dep.scoring_uri}; not recorded"}
    details = {"sample": sample, "tolerance": args.tolerance, "requests": args.requests, "p99_ms": args.p99_ms,
               "has_expect": args.expect is not None, "report": report.to_dict()}
    if args.expect is not None:
        details["expect"] = expect
    rec = history.record(Record(
        service=args.name, env=args.env, action="smoke-test", status="passed" if report.passed else "failed",
        model=dep.model, version=dep.version, image=dep.image, image_id=dep.image_id, scoring_uri=dep.scoring_uri,
        target=target_name, cause=f"user:{current_actor()}", reason=report.reason(), details=details,
    ))
    out = {"recorded": True, "id": rec.id, "image_id": dep.image_id}
    if report.passed and target_name == "kubernetes":
        # the evidence travels with the Deployment too: promote on a runner with no shared database trusts it
        try:
            out["annotations"] = get_target(target_name).annotate_smoke_test(
                dep, details["report"], rec.time,
                {**details, "expect": expect} if args.expect is not None else details)
        except Exception as exc:  # noqa: BLE001 - the history record stands; say why the Deployment has no evidence
            out["annotations"] = None
            out["annotate_error"] = getattr(exc, "message", str(exc))
            ci_output.report_warning(f"smoke test passed but was not recorded on the Deployment: {out['annotate_error']}")
            print(f"warning: the pass is in the history, not on the Deployment: {out['annotate_error']}", file=sys.stderr)
    return out
