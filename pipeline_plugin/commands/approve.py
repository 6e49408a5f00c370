"""`pipeline-plugin approve RUN`: release a promotion held by an approval gate (or --reject it)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import ConfigError, StageFailed
from ..history import History, Record, current_actor, use_state_dir
from ..output import Progress, add_json_flag, emit
from ..stages.promote import promote
from .promote import EXIT, human
from ..store import add_database_url_flag, use_database_url

KEY_ENV = "PIPELINE_PLUGIN_SCORING_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "approve",
        help="release a promotion waiting for approval (pipeline-plugin approve RUN)",
        description="Approve (and carry out) a promotion held by an approval gate, or --reject it. "
        "--list shows the promotions waiting.",
    )
    p.add_argument("run", nargs="?", help="the run id the held promotion printed")
    p.add_argument("--reject", action="store_true", help="reject: the promotion never happens")
    p.add_argument("--list", action="store_true", help="list promotions waiting for approval")
    p.add_argument("--by", help="who approves (default: the CI user or login name)")
    p.add_argument("--key", help=f"production scoring key (default: ${KEY_ENV})")
    p.add_argument("--state-dir", type=Path, help="state dir (default $PIPELINE_PLUGIN_STATE_DIR)")
    add_database_url_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    use_state_dir(args.state_dir)
    use_database_url(args.database_url)
    history = History(args.state_dir)
    if args.list:
        pending = [a.to_dict() for a in history.approvals(status="pending")]
        lines = [f"{a['run_id']}  {a['service']} {a['request'].get('from_env')} -> {a['request'].get('to_env')}  "
                 f"image {a['request'].get('image_id')}  since {a['requested_at']}" for a in pending]
        emit(args, {"pending": pending}, "\n".join(lines) or "no promotion waits for approval")
        return 0
    if not args.run:
        raise ConfigError("approve needs the RUN id of a held promotion (see `pipeline-plugin approve --list`)")
    by = args.by or current_actor()
    approval = history.approval(args.run)
    if approval.status != "pending":
        raise StageFailed(
            f"run {args.run} is not waiting for approval: it was {approval.status}"
            + (f" by {approval.decided_by} at {approval.decided_at}" if approval.decided_by else ""),
            run_id=args.run, status=approval.status,
        )
    req = approval.request
    base = dict(service=approval.service, env=req.get("to_env", "production"), target=req.get("target"),
                image_id=req.get("image_id"), run_id=args.run, cause=f"user:{by}")
    if args.reject:
        history.decide(args.run, "rejected", by)
        history.record(Record(action="approval", status="rejected", reason=f"rejected by {by}", **base))
        emit(args, {"run_id": args.run, "status": "rejected", "by": by}, f"run {args.run}: promotion rejected by {by}")
        return 0
    history.decide(args.run, "approved", by)
    history.record(Record(action="approval", status="approved", reason=f"approved by {by}", **base))
    key = args.key or os.environ.get(KEY_ENV)
    result = promote(
        approval.service, from_env=req.get("from_env", "staging"), to_env=req.get("to_env", "production"),
        target=req.get("target"), port=req.get("port"), strategy=req.get("strategy", "blue-green"),
        keys=(key,) if key else (), history=history, run_id=args.run, cause=req.get("cause"),
        require_approval=True, approved_by=by, run_url=req.get("run_url"),
        smoke_overrides=req.get("smoke_overrides") or None, write_back=req.get("write_back", True),
        environment=req.get("environment") or None,
        approved_image_id=req.get("image_id"),  # what the reviewer saw: a newer staging is not approved
        progress=Progress(enabled=not args.json),
    )
    emit(args, result.to_dict(), human(result))
    return EXIT[result.status]
