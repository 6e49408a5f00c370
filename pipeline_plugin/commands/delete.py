"""`pipeline-plugin delete`: stop and remove an environment of a service."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..history import History, use_state_dir
from ..output import Progress, add_json_flag, emit
from ..stages.delete import delete
from ..store import add_database_url_flag, use_database_url


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "delete",
        help="stop and remove an environment of a service (idempotent)",
        description="Stop and remove what serves an environment (containers and the stable address, processes, "
        "Kubernetes objects) and the store's record of it; record who deleted what in the history. Deleting "
        "an environment that is already gone is not an error. Production is removed only with --yes.",
    )
    p.add_argument("--name", required=True, help="service name")
    p.add_argument("--env", required=True, help="environment to remove (staging, production, ...)")
    p.add_argument("--target", help="deploy target (default: from the history)")
    p.add_argument("--yes", action="store_true", help="confirm deleting production")
    p.add_argument("--reason", help="why, recorded in the history")
    p.add_argument("--state-dir", type=Path, help="state dir (default $PIPELINE_PLUGIN_STATE_DIR)")
    add_database_url_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    use_state_dir(args.state_dir)
    use_database_url(args.database_url)
    result = delete(args.name, args.env, target=args.target, history=History(args.state_dir), confirmed=args.yes,
                    reason=args.reason, progress=Progress(enabled=not args.json))
    if result.status == "deleted":
        d = result.deleted or {}
        human = f"{result.service} {result.env}: deleted v{d.get('version')} ({d.get('image_id')}) on {result.target}"
    else:
        human = f"{result.service} {result.env}: {result.reason}"
    emit(args, result.to_dict(), human)
    return 0
