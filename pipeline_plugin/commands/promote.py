"""`pipeline-plugin promote`: move the exact image that passed staging into production with zero
failed requests, check production, and roll back automatically when that check fails."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..ci import output as ci_output
from ..history import History, use_state_dir
from ..output import Progress, add_json_flag, emit
from ..stages.promote import DEFAULT_CANARY_SECONDS, DEFAULT_CANARY_WEIGHT, STRATEGIES, promote
from ..store import add_database_url_flag, use_database_url

KEY_ENV = "PIPELINE_PLUGIN_SCORING_KEY"
#: exit code per result status
EXIT = {"promoted": 0, "unchanged": 0, "pending-approval": 0, "rolled-back": 1, "failed": 1}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "promote",
        help="promote the image that passed staging to production (zero downtime, automatic rollback)",
        description="Promote the exact image digest that passed its staging smoke test. Production switches "
        "with zero failed requests, is smoke-tested with the staging sample, and is rolled back automatically "
        "when that check fails (exit 1).",
    )
    p.add_argument("--name", required=True, help="service name")
    p.add_argument("--from", dest="from_env", default="staging", help="environment to promote from (default staging)")
    p.add_argument("--to", dest="to_env", default="production", help="environment to promote to (default production)")
    p.add_argument("--port", type=int, help="stable port of the production address (default: keep the current one)")
    p.add_argument("--strategy", choices=STRATEGIES, default="blue-green", help="switch strategy (default blue-green)")
    p.add_argument("--canary-weight", type=int, default=DEFAULT_CANARY_WEIGHT, metavar="PCT",
                   help=f"--strategy canary: percent of production's requests the new version gets, 1..99 "
                   f"(default {DEFAULT_CANARY_WEIGHT})")
    p.add_argument("--canary-seconds", type=float, default=DEFAULT_CANARY_SECONDS, metavar="N",
                   help=f"--strategy canary: seconds to watch the canary before switching fully (default {DEFAULT_CANARY_SECONDS:g})")
    p.add_argument("--target", help="deploy target (default: from the history, else docker/process)")
    p.add_argument("--key", help=f"production scoring key (default: ${KEY_ENV})")
    p.add_argument("--require-approval", action="store_true",
                   help="hold the promotion until `pipeline-plugin approve RUN`")
    p.add_argument("--run-id", help="run id for the history and the approval (default: generated)")
    p.add_argument("--run-url", default=os.environ.get("PIPELINE_PLUGIN_RUN_URL"),
                   help="URL of the CI run, written back to the registry (default $PIPELINE_PLUGIN_RUN_URL)")
    p.add_argument("--sample", type=Path, help="production check input (default: the sample that passed staging)")
    p.add_argument("--expect", type=Path, help="production check expected output (default: staging's)")
    p.add_argument("--tolerance", type=float, help="production check tolerance (default: staging's)")
    p.add_argument("--requests", type=int, help="production check request count (default: staging's)")
    p.add_argument("--p99-ms", type=float, help="production p99 latency budget in ms (default: staging's)")
    p.add_argument("--no-writeback", action="store_true", help="do not write aliases and tags back to the registry")
    p.add_argument("--state-dir", type=Path, help="state dir (default $PIPELINE_PLUGIN_STATE_DIR)")
    add_database_url_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run_url_from_ci() -> str | None:
    env = os.environ
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        return f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    if env.get("CI_PIPELINE_URL"):
        return env["CI_PIPELINE_URL"]
    if env.get("SYSTEM_COLLECTIONURI") and env.get("BUILD_BUILDID"):
        return f"{env['SYSTEM_COLLECTIONURI']}{env.get('SYSTEM_TEAMPROJECT', '')}/_build/results?buildId={env['BUILD_BUILDID']}"
    return None


def human(result) -> str:
    lines = [f"{result.service} {result.env}: {result.status}"]
    if result.version or result.image_id:
        lines.append(f"  version {result.model or '?'} v{result.version or '?'}  image {result.image_id}")
    if result.scoring_uri:
        lines.append(f"  scoring URI {result.scoring_uri}")
    if result.reason:
        lines.append(f"  {result.reason}")
    if result.smoke is not None and not result.smoke.passed:
        lines.append("  " + result.smoke.human().replace("\n", "\n  "))
    if result.writeback:
        wb = result.writeback
        lines.append(f"  write-back: {wb.get('status')} {wb.get('skipped') or wb.get('error') or wb.get('aliases') or ''}")
    return "\n".join(lines)


def smoke_overrides(args: argparse.Namespace) -> dict:
    """Production check settings given on the command line (the rest come from staging's check)."""
    from ..stages.smoke_test import load_json_file

    out: dict = {}
    if args.sample:
        out["sample"] = load_json_file(args.sample, "--sample")
    if args.expect:
        out["expect"] = load_json_file(args.expect, "--expect")
        out["has_expect"] = True
    if args.tolerance is not None:
        out["tolerance"] = args.tolerance
    if args.requests is not None:
        out["requests_count"] = args.requests
    if args.p99_ms is not None:
        out["p99_ms"] = args.p99_ms
    return out


def run(args: argparse.Namespace) -> int:
    use_state_dir(args.state_dir)
    use_database_url(args.database_url)
    key = args.key or os.environ.get(KEY_ENV)
    result = promote(
        args.name, from_env=args.from_env, to_env=args.to_env, target=args.target, port=args.port,
        strategy=args.strategy, keys=(key,) if key else (), history=History(args.state_dir), run_id=args.run_id,
        require_approval=args.require_approval, run_url=args.run_url or run_url_from_ci(),
        write_back=not args.no_writeback, smoke_overrides=smoke_overrides(args) or None,
        progress=Progress(enabled=not args.json), canary_weight=args.canary_weight, canary_seconds=args.canary_seconds,
    )
    ci_output.set_outputs({"status": result.status, "scoring-uri": result.scoring_uri or "", "image": result.image_id or ""})
    if EXIT[result.status]:
        ci_output.report_error(f"promotion of {result.service} to {result.env} {result.status}: {result.reason}")
    emit(args, result.to_dict(), human(result))
    return EXIT[result.status]
