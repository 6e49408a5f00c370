"""`pipeline-plugin ci-deployment`: record a deployment in the CI system's own records (the
action.yml wraps deploy, promote and rollback with it)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .. import output
from ..ci.deployments import STATES, record


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ci-deployment",
        help="record a deployment in GitHub's or GitLab's deployments (inside CI; never fails the job)",
        description=(
            "Record that an environment is being deployed (in_progress) or was (success, failure): a GitHub "
            "deployment with statuses (GITHUB_TOKEN with deployments: write) or a GitLab deployment "
            "(GITLAB_TOKEN). Outside CI or without a token it does nothing. Exit 0 even when the service "
            "refuses (a warning is printed)."
        ),
    )
    parser.add_argument("--environment", required=True, help="staging, production ...")
    parser.add_argument("--state", required=True, choices=STATES)
    parser.add_argument("--model", default="", help="registered model name (goes into the payload)")
    parser.add_argument("--version", default="", help="model version (goes into the payload)")
    parser.add_argument("--service", default="")
    parser.add_argument("--scoring-uri", default="", help="the environment URL shown on the deployment")
    parser.add_argument("--description", default="")
    parser.add_argument(
        "--scoring-uri-from-outputs",
        action="store_true",
        help="take the scoring URI from the step outputs ($GITHUB_OUTPUT) the stage command wrote",
    )
    output.add_json_flag(parser)
    parser.set_defaults(func=run)


def step_outputs(path: str) -> dict[str, str]:
    """Parse a $GITHUB_OUTPUT file (name=value lines and name<<DELIMITER blocks)."""
    out: dict[str, str] = {}
    try:
        lines = open(path, encoding="utf-8").read().split("\n")
    except OSError:
        return out
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            try:
                end = lines.index(delim, i + 1)
            except ValueError:
                break
            out[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        if "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


def run(args: argparse.Namespace) -> int:
    scoring_uri = args.scoring_uri
    if args.scoring_uri_from_outputs and not scoring_uri and os.environ.get("GITHUB_OUTPUT"):
        scoring_uri = step_outputs(os.environ["GITHUB_OUTPUT"]).get("scoring-uri", "")
    info = {"model": args.model, "version": args.version, "service": args.service,
            "scoring_uri": scoring_uri, "description": args.description}
    done = record(args.environment, args.state, **{k: v for k, v in info.items() if v})
    output.emit(args, {"recorded": done}, "\n".join(f"{d['system']} deployment {d['id']}: {d['state']}" for d in done)
                or "no deployment recorded (not in CI, or no token)")
    return 0
