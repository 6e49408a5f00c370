"""`pipeline-plugin render`: the CI pipeline a trigger rule would start for one event."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterable

from .. import output
from ..ci import output as ci_output
from ..errors import ConfigError, suggest
from ..events import ModelVersionEvent
from ..render import RENDER_ALIASES, TEMPLATES, render_pipeline


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "render",
        help="render the CI pipeline (GitHub Actions, Azure Pipelines, GitLab CI) for a rule and an event",
        description=(
            "Render the pipeline file a trigger rule starts, for one normalized event (the JSON that "
            "`pipeline-plugin events show ID --json` prints). Event values go in only as pipeline inputs, "
            "parameters or variables; names outside the allowed patterns are refused. Prints the file, or "
            "with -o writes it where it belongs in a repository (e.g. .github/workflows/deploy-model.yml)."
        ),
    )
    add_rule_event_arguments(parser, [*TEMPLATES, *RENDER_ALIASES], "the rule whose pipeline settings apply")
    parser.add_argument("-o", "--output-dir", metavar="DIR", help="write the file under DIR (a repository root)")
    parser.add_argument(
        "--templates",
        metavar="DIR",
        help="your own templates: DIR/github/deploy-model.yml.j2, DIR/azure-pipelines/deploy-model.yml.j2, "
        "DIR/gitlab/deploy-model.gitlab-ci.yml.j2 (sandboxed, strict; default: the built-in ones)",
    )
    output.add_json_flag(parser)
    parser.set_defaults(func=run)


def add_rule_event_arguments(parser: argparse.ArgumentParser, providers: Iterable[str], rule_help: str) -> None:
    """--provider (one of ``providers``), --triggers, --rule and --event: a rule and an event to act on."""
    parser.add_argument("--provider", required=True, choices=sorted(providers), help="which CI system")
    parser.add_argument("--triggers", required=True, metavar="DIR", help="the folder holding the rule files")
    parser.add_argument("--rule", required=True, metavar="NAME", help=rule_help)
    parser.add_argument("--event", required=True, metavar="FILE", help="a normalized event JSON file")


def find_rule(triggers: str, name: str) -> Any:
    from ..rules import load_rules

    rules = load_rules(triggers)
    for rule in rules:
        if rule.name == name:
            return rule
    names = [r.name for r in rules]
    hint = suggest(name, names) if names else f" {triggers} holds no rules."
    raise ConfigError(f"no rule named {name!r} in {triggers}.{hint}", field="--rule")


def run(args: argparse.Namespace) -> int:
    rule = find_rule(args.triggers, args.rule)
    event = ModelVersionEvent.from_file(args.event)
    rendered = render_pipeline(
        args.provider, event, rule.name, dict(rule.pipeline or {}),
        template_dir=Path(args.templates) if args.templates else None,
    )
    data: dict[str, Any] = {**rendered.to_dict(), "rule": rule.name, "model": event.model, "version": event.version}
    if args.output_dir:
        target = Path(args.output_dir) / rendered.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(rendered.text, encoding="utf-8")
        data["file"] = str(target)
        ci_output.set_outputs({"pipeline-file": str(target)})
        ci_output.add_summary(
            f"### Rendered {args.provider} pipeline\n\nRule `{rule.name}`, model `{event.model}` version "
            f"`{event.version}` -> `{target}`"
        )
        output.emit(args, data, f"wrote {target}")
    elif args.json:
        output.emit(args, {**data, "text": rendered.text})
    else:
        print(rendered.text, end="")
    return 0
