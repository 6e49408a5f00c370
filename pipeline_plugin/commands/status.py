"""`pipeline-plugin status`: which model version and image serve each environment of a service,
and the history of what was deployed, when, why and by which event or person."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import NotFoundError
from ..history import History, use_state_dir
from ..output import add_json_flag, emit
from ..store import add_database_url_flag, use_database_url

ENV_ORDER = ("staging", "production")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "status",
        help="what serves each environment of a service, and its deployment history",
        description="Which model version and image digest serve each environment, and what was deployed, "
        "when, why and by which event or person.",
    )
    p.add_argument("--name", required=True, help="service name")
    p.add_argument("--target", help="deploy target to ask what runs (default: from the history)")
    p.add_argument("--limit", type=int, default=20, help="history entries to show (default 20)")
    p.add_argument("--state-dir", type=Path, help="state dir (default $PIPELINE_PLUGIN_STATE_DIR)")
    add_database_url_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def live(service: str, env: str, history: History, target: str | None):
    """The deployment the target reports (None if it has none or cannot be asked), and the target."""
    from ..stages.promote import resolve_target
    from ..targets import get_target

    try:
        name = resolve_target(service, env, history, target)
        return get_target(name).get(service, env), name, None
    except Exception as exc:  # noqa: BLE001 - status must still show the history
        return None, target, getattr(exc, "message", str(exc))


def collect(service: str, history: History, target: str | None = None, limit: int = 20) -> dict:
    envs = sorted(set(history.environments(service)), key=lambda e: (ENV_ORDER.index(e) if e in ENV_ORDER else 9, e))
    if not envs and target is None:
        known = history.services()
        raise NotFoundError(
            f"no deployment history for service {service!r}; known services: {', '.join(known) or 'none yet'}",
            service=service,
        )
    environments = {}
    for env in envs or list(ENV_ORDER):
        dep, tname, problem = live(service, env, history, target)
        rec = history.serving(service, env)
        entry = {
            "target": tname,
            "running": dep is not None,
            "model": (dep.model if dep else None) or (rec.model if rec else None),
            "version": (dep.version if dep else None) or (rec.version if rec else None),
            "image_id": dep.image_id if dep else None,
            "scoring_uri": dep.scoring_uri if dep else None,
            "since": rec.time if rec else None,
            "why": rec.reason if rec else None,
            "by": rec.cause if rec else None,
        }
        if dep is not None and rec is not None and rec.image_id and rec.image_id != dep.image_id:
            entry["note"] = f"the target runs {dep.image_id}, the history last recorded {rec.image_id}"
            entry["version"] = dep.version
        if problem:
            entry["error"] = problem
        environments[env] = entry
    pending = [a.to_dict() for a in history.approvals(service=service, status="pending")]
    records = [
        {k: r.to_dict()[k] for k in ("time", "env", "action", "status", "model", "version", "image_id", "run_id", "cause", "reason")}
        for r in history.records(service=service, limit=limit)
    ]
    return {"service": service, "environments": environments, "pending_approvals": pending, "history": records}


def human(data: dict) -> str:
    lines = [f"service {data['service']}"]
    for env, e in data["environments"].items():
        if e["running"]:
            lines.append(f"  {env:<11} {e['model'] or '?'} v{e['version'] or '?'}  {e['image_id']}  {e['scoring_uri']}")
            lines.append(f"  {'':<11} since {e['since'] or '?'} by {e['by'] or '?'}: {e['why'] or ''}")
        else:
            lines.append(f"  {env:<11} not running" + (f" ({e['error']})" if e.get("error") else ""))
        if e.get("note"):
            lines.append(f"  {'':<11} note: {e['note']}")
    for a in data["pending_approvals"]:
        lines.append(f"  waiting for approval: pipeline-plugin approve {a['run_id']}")
    lines.append("history (newest first):")
    for r in data["history"]:
        version = f"v{r['version']}" if r["version"] else ""
        lines.append(f"  {r['time']}  {r['env']:<10} {r['action']:<10} {r['status']:<9} {version:<6} "
                     f"{(r['image_id'] or '')[:19]:<19} {r['cause'] or ''}: {r['reason']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    use_state_dir(args.state_dir)
    use_database_url(args.database_url)
    data = collect(args.name, History(args.state_dir), args.target, args.limit)
    emit(args, data, human(data))
    return 0
