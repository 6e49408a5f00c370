"""`pipeline-plugin rollback`: put an environment back on the previous (or a named) version."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..history import History, use_state_dir
from ..output import Progress, add_json_flag, emit
from ..stages.rollback import rollback
from ..store import add_database_url_flag, use_database_url

KEY_ENV = "PIPELINE_PLUGIN_SCORING_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rollback",
        help="put an environment back on the previous (or a named) version's image",
        description="Switch an environment back to the image of the version it served before (or --to VERSION), "
        "with zero failed requests, and move the registry's production aliases back.",
    )
    p.add_argument("--name", required=True, help="service name")
    p.add_argument("--env", default="production", help="environment (default production)")
    p.add_argument("--to", dest="to_version", help="model version to go back to (default: the previous one)")
    p.add_argument("--if-serving", metavar="VERSION",
                   help="roll back only if the environment serves this model version now (else exit 0, "
                   "status unchanged); CI rollback jobs pass the version they tried to promote")
    p.add_argument("--target", help="deploy target (default: from the history)")
    p.add_argument("--key", help=f"scoring key the environment requires (default: ${KEY_ENV})")
    p.add_argument("--reason", help="why, recorded in the history")
    p.add_argument("--no-writeback", action="store_true", help="do not move the registry's aliases")
    p.add_argument("--state-dir", type=Path, help="state dir (default $PIPELINE_PLUGIN_STATE_DIR)")
    add_database_url_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    use_state_dir(args.state_dir)
    use_database_url(args.database_url)
    key = args.key or os.environ.get(KEY_ENV)
    result = rollback(
        args.name, env=args.env, to_version=args.to_version, target=args.target, keys=(key,) if key else (),
        history=History(args.state_dir), reason=args.reason, write_back=not args.no_writeback,
        if_serving=args.if_serving, progress=Progress(enabled=not args.json),
    )
    if result.status in ("unchanged", "failed"):
        human = result.reason
    else:
        human = (f"{result.service} {result.env}: rolled back to {result.model or ''} v{result.version} "
                 f"({result.image_id}) at {result.scoring_uri}")
    emit(args, result.to_dict(), human)
    return 1 if result.status == "failed" else 0
