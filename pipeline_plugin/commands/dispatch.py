"""`pipeline-plugin dispatch`: start the pipeline a trigger rule names, for one event, now."""

from __future__ import annotations

import argparse
from typing import Any

from .. import output
from ..ci import output as ci_output
from ..errors import ConfigError
from ..events import ModelVersionEvent
from ..providers import ALIASES, BACKENDS, PipelineRun, canonical, get_provider
from ..render import event_id
from .render import add_rule_event_arguments, find_rule


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dispatch",
        help="start the CI pipeline of a rule for an event (GitHub Actions, GitLab CI, Azure DevOps, local)",
        description=(
            "Start the pipeline named by a trigger rule's `pipeline:` section for one normalized event, "
            "through the CI system's API (settings: GITHUB_API_URL/GITHUB_TOKEN, CI_SERVER_URL/GITLAB_TOKEN, "
            "SYSTEM_COLLECTIONURI/AZURE_DEVOPS_EXT_PAT). 429 and 5xx answers are retried with backoff; "
            "401/403/404/422 fail at once with what to fix. Prints the run's URL."
        ),
    )
    add_rule_event_arguments(parser, [*BACKENDS, *ALIASES], "the rule whose pipeline to start")
    output.add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rule = find_rule(args.triggers, args.rule)
    event = ModelVersionEvent.from_file(args.event)
    if not rule.pipeline:
        raise ConfigError(f"rule {rule.name!r} ({rule.location}) has no pipeline: section; nothing to dispatch",
                          field="--rule")
    args.provider = canonical(args.provider)
    if canonical(str(rule.pipeline.get("provider"))) != args.provider:
        raise ConfigError(
            f"rule {rule.name!r} dispatches to {rule.pipeline.get('provider')!r}, not {args.provider!r}; pass "
            f"--provider {rule.pipeline.get('provider')}",
            field="--provider",
        )
    pipeline = dict(rule.pipeline)
    pipeline_run = PipelineRun(
        run_id=event_id(event, rule.name),
        rule_name=rule.name,
        pipeline=pipeline,
        event=event,
        rules_dir=rule.directory,
    )
    result = get_provider(args.provider).dispatch(pipeline_run)
    data = {**result.to_dict(), "run_id": pipeline_run.run_id, "rule": rule.name, "model": event.model,
            "version": event.version}
    ci_output.set_outputs({"run-url": result.url or "", "run-id": result.external_id or ""})
    ci_output.add_summary(
        f"### Dispatched {args.provider} pipeline\n\n| | |\n|---|---|\n| rule | `{rule.name}` |\n"
        f"| model | `{event.model}` |\n| version | `{event.version}` |\n| status | {result.status} |\n"
        f"| run | {result.url or '-'} |"
    )
    output.emit(args, data, f"{result.status}: {result.detail}" + (f"\n{result.url}" if result.url else ""))
    return 0 if result.status in ("dispatched", "succeeded") else 1
