"""`pipeline-plugin events list|show|replay|pollers`: what the listener received and what became of it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError, NotFoundError
from ..output import add_json_flag, emit
from ..settings import default_state_dir
from ..store import add_database_url_flag


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("events", help="list, show and replay received registry events")
    sub = p.add_subparsers(dest="events_command", metavar="ACTION")
    sub.required = True

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--state-dir", type=Path, help="the listener's state dir (default $PIPELINE_PLUGIN_STATE_DIR)")
        add_database_url_flag(q, help="the shared inbox of `serve` replicas (default $PIPELINE_PLUGIN_DATABASE_URL): "
                              "a postgresql:// URL reads it there instead of the state dir's inbox.sqlite3")
        add_json_flag(q)

    q = sub.add_parser("list", help="received events, oldest first, with status and matched rules")
    common(q)
    q.add_argument("--status", choices=["pending", "matched", "unmatched", "ignored", "failed"], help="only this status")
    q.add_argument("--limit", type=int, help="only the newest N events")
    q.set_defaults(func=run_list)

    q = sub.add_parser("show", help="one event: its fields, status, runs (with URLs) and history")
    q.add_argument("id", help="event id (or a unique prefix of one)")
    common(q)
    q.set_defaults(func=run_show)

    q = sub.add_parser("replay", help="match one event against the rules again and dispatch the matched runs")
    q.add_argument("id", help="event id (or a unique prefix of one)")
    q.add_argument("--triggers", type=Path, help="folder of trigger rule files (default: ./triggers if present)")
    common(q)
    q.set_defaults(func=run_replay)

    q = sub.add_parser("pollers", help="the registry pollers serve runs: who polls, last success, last error, next poll")
    common(q)
    q.set_defaults(func=run_pollers)


def _inbox(args: argparse.Namespace):
    from ..inbox import DB_NAME
    from ..inbox.select import open_inbox, shared_url

    state_dir = args.state_dir or default_state_dir()
    url = getattr(args, "database_url", None)
    if shared_url(url):
        return open_inbox(state_dir, url)
    if not (Path(state_dir) / DB_NAME).exists():
        raise NotFoundError(
            f"no inbox in {str(state_dir)!r} (no {DB_NAME}); pass the --state-dir that `pipeline-plugin serve` uses"
        )
    return open_inbox(state_dir)


def run_list(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit} must be 1 or more")
    events = _inbox(args).list(status=args.status, limit=args.limit)
    data = [e.summary() for e in events]
    lines = [f"{'ID':<20} {'RECEIVED':<24} {'SOURCE':<15} {'KIND':<22} {'MODEL':<24} {'VERSION':<8} {'STATUS':<9} RULES"]
    for d in data:
        lines.append(
            f"{d['id']:<20} {d['received_at']:<24} {d['source']:<15} {d['kind']:<22} {d['model'][:24]:<24} "
            f"{d['version'][:8]:<8} {d['status']:<9} {', '.join(d['rules']) or '-'}"
        )
    if not data:
        lines = ["no events" + (f" with status {args.status}" if args.status else "")]
    emit(args, data, "\n".join(lines))
    return 0


def _human(stored) -> str:
    d = stored.to_dict()
    out = [
        f"event {d['id']}: {d['source']} {d['kind']} {d['model']} version {d['version']}",
        f"  status:   {d['status']}" + (f" ({d['reason']})" if d["reason"] else ""),
        f"  rules:    {', '.join(d['rules']) or '-'}",
        f"  received: {d['received_at']}  delivery {d['delivery_id']}",
    ]
    for key in ("alias", "artifact_uri", "image_uri", "digest", "approval_status"):
        if d.get(key):
            out.append(f"  {key}: {d[key]}")
    if d["tags"]:
        out.append("  tags:     " + ", ".join(f"{k}={v}" for k, v in sorted(d["tags"].items())))
    if d["registry"]:
        out.append("  registry: " + ", ".join(f"{k}={v}" for k, v in sorted(d["registry"].items())))
    if d["last_error"]:
        out.append(f"  error:    {d['last_error']}")
    for run in d["runs"]:
        out.append(
            f"  run {run['run_id']} rule {run['rule']} via {run['provider']}: {run['status']}"
            + (f" {run['url']}" if run["url"] else "")
            + (f" ({run['detail']})" if run["detail"] else "")
        )
    out.append("  history:")
    for h in d["history"]:
        extra = {k: v for k, v in h.items() if k not in ("at", "what") and v not in (None, "", [], {})}
        out.append(f"    {h['at']} {h['what']}" + (f" {extra}" if extra else ""))
    return "\n".join(out)


def run_show(args: argparse.Namespace) -> int:
    stored = _inbox(args).get(args.id)
    emit(args, stored.to_dict(), _human(stored))
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from ..rules import load_rules
    from ..worker import Worker

    triggers = args.triggers
    if triggers is None and Path("triggers").is_dir():
        triggers = Path("triggers")
    if triggers is None:
        raise ConfigError("events replay needs the trigger rules: pass --triggers DIR (the folder `serve` uses)")
    rules = load_rules(triggers)
    inbox = _inbox(args)
    worker = Worker(inbox, rules, triggers)
    try:
        stored = worker.replay(args.id)
    finally:
        inbox.retire_owner(worker.owner)
    emit(args, stored.to_dict(), _human(stored))
    return 0 if stored.status != "failed" else 1


def run_pollers(args: argparse.Namespace) -> int:
    from ..poll.service import pollers_status

    data = pollers_status(_inbox(args))
    lines = [f"{'SOURCE':<12} {'STATE':<9} {'LAST SUCCESS':<26} {'NEXT POLL':<26} {'ERRORS':<6} REGISTRY / LAST ERROR"]
    for p in data:
        lines.append(f"{p['source']:<12} {p.get('state') or '-':<9} {p.get('last_success') or '-':<26} "
                     f"{p.get('next_poll') or '-':<26} {p.get('consecutive_errors') or 0:<6} {p.get('registry') or '-'}")
        if p.get("last_error"):
            lines.append(f"{'':<12} last error at {p.get('last_error_at')}: {p['last_error']}")
    if not data:
        lines = ["no pollers running (serve polls the registries of its config's poll: section)"]
    emit(args, data, "\n".join(lines))
    return 0
