"""`pipeline-plugin prune`: remove local images this tool built that no environment or rollback needs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..history import History, use_state_dir
from ..output import Progress, add_json_flag, emit
from ..stages.prune import DEFAULT_KEEP, prune
from ..store import add_database_url_flag, use_database_url


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a count; give 0 or more, e.g. --keep 3")
    return n


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prune",
        help="remove images of versions that serve nowhere and are older than the last N",
        description="Remove local Docker images built by pipeline-plugin that nothing needs: kept are the images "
        "an environment serves, the one each environment's rollback would go back to, those a pending approval "
        "or a container uses, and the newest --keep images of each service. Prints what it removed and what it "
        "kept, with the reason. Images pushed to a registry are not touched.",
    )
    p.add_argument("--name", help="only this service's images (default: every service)")
    p.add_argument("--keep", type=_count, default=DEFAULT_KEEP,
                   help=f"newest images to keep per service besides those in use (default {DEFAULT_KEEP})")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    p.add_argument("--state-dir", type=Path, help="state dir (default $PIPELINE_PLUGIN_STATE_DIR)")
    add_database_url_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def _line(v) -> str:
    name = ", ".join(v.tags) or v.image_id[:19]
    return f"  {name}  {v.service} v{v.version}"


def run(args: argparse.Namespace) -> int:
    use_state_dir(args.state_dir)
    use_database_url(args.database_url)
    result = prune(service=args.name, keep=args.keep, dry_run=args.dry_run, history=History(args.state_dir),
                   progress=Progress(enabled=not args.json))
    verb = "would remove" if result.dry_run else "removed"
    lines = [f"{verb} {len(result.removed)} image(s)" + (":" if result.removed else "")]
    lines += [_line(v) for v in result.removed]
    lines.append(f"kept {len(result.kept)} image(s)" + (":" if result.kept else ""))
    lines += [_line(v) + "  - " + "; ".join(v.reasons) for v in result.kept]
    emit(args, result.to_dict(), "\n".join(lines))
    return 0
