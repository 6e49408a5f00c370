"""`pipeline-plugin rules check DIR` and `pipeline-plugin rules explain --triggers DIR --event FILE`."""

from __future__ import annotations

import argparse
import sys

from .. import output
from ..errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "rules",
        help="validate trigger rules and explain which rules an event matches",
        description="Trigger rules (triggers/*.yml) decide which registry events start which pipelines.",
    )
    sub = parser.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    sub.required = True

    check = sub.add_parser(
        "check",
        help="validate every rule file in a folder",
        description=(
            "Load every *.yml / *.yaml rule file in DIR and report every error (file:line: message; "
            "suggestion). Exit 0 when all rules load, 2 when any does not."
        ),
    )
    check.add_argument("directory", metavar="DIR", help="the folder holding the rule files (e.g. triggers)")
    output.add_json_flag(check)
    check.set_defaults(func=run_check)

    explain = sub.add_parser(
        "explain",
        help="say, for each rule, whether an event matches it or which condition fails first",
        description=(
            "Evaluate every rule in --triggers against one normalized event (the JSON that "
            "`pipeline-plugin events show ID --json` prints). `version: latest` treats the event's own "
            "version as the latest. Exit 0 whether or not a rule matched; 2 on bad rules or a bad event."
        ),
    )
    explain.add_argument("--triggers", required=True, metavar="DIR", help="the folder holding the rule files")
    explain.add_argument("--event", required=True, metavar="FILE", help="a normalized event JSON file")
    explain.add_argument(
        "--state-dir",
        metavar="DIR",
        help="answer `version: latest` from the listener's inbox in DIR (default: the event's own version "
        "counts as the latest)",
    )
    from ..store import add_database_url_flag

    add_database_url_flag(
        explain,
        help="answer `version: latest` from the shared inbox of `serve` replicas in this postgresql:// database "
        "(with --state-dir, $PIPELINE_PLUGIN_DATABASE_URL does too) instead of the state dir's inbox.sqlite3",
    )
    output.add_json_flag(explain)
    explain.set_defaults(func=run_explain)


def run_check(args: argparse.Namespace) -> int:
    from ..rules import check_rules, rule_warnings

    rules, errors = check_rules(args.directory)
    warnings = rule_warnings(rules)
    enabled = sum(1 for r in rules if r.enabled)
    data = {
        "ok": not errors,
        "directory": args.directory,
        "rules": [r.to_dict() for r in rules],
        "count": len(rules),
        "enabled": enabled,
        "errors": [e.to_dict() for e in errors],
        "warnings": [w.to_dict() for w in warnings],
    }
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if errors:
        if args.json:
            output.emit(args, data)
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        print(f"{len(errors)} error{'s' if len(errors) != 1 else ''} in {args.directory}", file=sys.stderr)
        return 2
    lines = [f"{len(rules)} rule{'s' if len(rules) != 1 else ''} in {args.directory} ({enabled} enabled)"]
    if not rules:
        lines[0] += ": no *.yml or *.yaml rule files; every event will be recorded as unmatched"
    width = max((len(r.name) for r in rules), default=0)
    for r in rules:
        state = "" if r.enabled else "  [disabled]"
        what = f"provider {r.provider}" if r.provider else "records matches only"
        lines.append(f"  {r.name:<{width}}  {what:<22} {r.location}{state}")
    output.emit(args, data, "\n".join(lines))
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from ..events import ModelVersionEvent
    from ..rules import explain, load_rules

    rules = load_rules(args.triggers)
    event = ModelVersionEvent.from_file(args.event)
    ctx = None
    if args.state_dir or args.database_url:
        from pathlib import Path

        from ..inbox.select import open_inbox, shared_url

        shared = shared_url(args.database_url)
        if not shared and not args.state_dir:
            from ..store import mask

            raise ConfigError(
                f"--database-url {mask(args.database_url)!r} is no PostgreSQL database, so it holds no shared inbox; "
                "pass a postgresql://USER:PASSWORD@HOST:PORT/DB URL, or --state-dir for the listener's own inbox",
                field="--database-url",
            )
        if not shared and not Path(args.state_dir).is_dir():
            raise ConfigError(
                f"--state-dir {args.state_dir!r} does not exist; pass the folder `serve --state-dir` uses",
                field="--state-dir",
            )
        ctx = open_inbox(args.state_dir or "", args.database_url)
    results = explain(rules, event, ctx)
    matched = [r.rule.name for r in results if r.matched]
    data = {"event": event.to_dict(), "results": [r.to_dict() for r in results], "matched": matched}
    lines = [f"event: {event.source} {event.kind} model {event.model!r} version {event.version!r}"]
    width = max((len(r.rule.name) for r in results), default=0)
    for r in results:
        label = "MATCH" if r.matched else ("disabled" if r.condition == "enabled" else "no match")
        lines.append(f"  {label:<8}  {r.rule.name:<{width}}  {r.reason}")
    lines.append(f"{len(matched)} of {len(results)} rule{'s' if len(results) != 1 else ''} matched")
    output.emit(args, data, "\n".join(lines))
    return 0
