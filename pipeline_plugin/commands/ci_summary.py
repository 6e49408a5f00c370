"""`pipeline-plugin ci-summary`: turn a stage command's `--json` result into the job summary a
person reads at a glance (the action.yml runs it after package, deploy, smoke-test, promote and
rollback)."""

from __future__ import annotations

import argparse
import json
from typing import Any, Mapping

from .. import output
from ..ci import output as ci_output

TITLES = {
    "package": "Packaged model image",
    "deploy": "Deployed",
    "smoke-test": "Smoke test",
    "promote": "Promotion",
    "rollback": "Rollback",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ci-summary",
        help="write a stage's --json result as a job summary (GitHub step summary, Azure summary tab)",
        description="Read the JSON a stage command printed with --json and append the glance report "
        "(model, version, image digest, smoke-test checks, latency, error rate, outcome) to the CI summary.",
    )
    parser.add_argument("--stage", required=True, choices=sorted(TITLES))
    parser.add_argument("--result", required=True, metavar="FILE", help="the stage's --json output")
    parser.add_argument("--model", default="")
    parser.add_argument("--version", default="")
    parser.add_argument(
        "--set-outputs",
        action="store_true",
        help="also publish image, digest and scoring-uri from the result as CI outputs (GitHub step outputs, "
        "Azure output variables, GitLab dotenv) when the stage did not",
    )
    parser.add_argument("--no-summary", action="store_true", help="do not write the summary")
    output.add_json_flag(parser)
    parser.set_defaults(func=run)


def _smoke(data: Mapping[str, Any]) -> dict[str, Any]:
    checks = [{"name": c.get("name"), "passed": bool(c.get("passed")),
               "detail": ("skipped: " if c.get("skipped") else "") + str(c.get("message") or "")}
              for c in data.get("checks") or [] if isinstance(c, Mapping)]
    latency = {k: data[f"{k}_ms"] for k in ("p50", "p95", "p99") if isinstance(data.get(f"{k}_ms"), (int, float))}
    error_rate = None
    if isinstance(data.get("requests"), int) and data["requests"] > 0 and isinstance(data.get("errors"), int):
        error_rate = data["errors"] / data["requests"]
    return {"checks": checks, "latency_ms": latency or None, "error_rate": error_rate}


def summary_for(stage: str, data: Mapping[str, Any], model: str = "", version: str = "") -> str:
    """The Markdown for one stage result (also when the result is an error)."""
    title = TITLES[stage]
    env = data.get("env") or data.get("environment")
    if env:
        title += f": {env}"
    kwargs: dict[str, Any] = {
        "model": data.get("model") or model or None,
        "version": data.get("version") or version or None,
        "image": data.get("image") or data.get("image_id"),
        "digest": data.get("digest") or data.get("image_digest") or data.get("image_id"),
        "scoring_uri": data.get("scoring_uri") or (data.get("url") if stage == "smoke-test" else None),
    }
    if "error" in data and "message" in data:
        kwargs["outcome"] = f"failed: {data['message']}"
    elif stage == "smoke-test":
        kwargs["outcome"] = "passed" if data.get("passed") else "failed: " + ", ".join(map(str, data.get("failed") or []))
        kwargs.update(_smoke(data))
    elif stage in ("promote", "rollback"):
        outcome = str(data.get("status") or "")
        if data.get("previous"):
            outcome += f" (previous: {data['previous'] if not isinstance(data['previous'], Mapping) else data['previous'].get('version') or data['previous'].get('image_id')})"
        if data.get("reason"):
            outcome += f" - {data['reason']}"
        kwargs["outcome"] = outcome or None
        if isinstance(data.get("smoke_test"), Mapping):
            kwargs.update(_smoke(data["smoke_test"]))
    elif data.get("status"):
        kwargs["outcome"] = str(data["status"])
    return ci_output.stage_summary(title, **kwargs)


def run(args: argparse.Namespace) -> int:
    try:
        with open(args.result, encoding="utf-8") as fh:
            text = fh.read().strip()
        # the first JSON object; CI annotations (::error::) may follow it in the same stream
        data = json.JSONDecoder().raw_decode(text[text.index("{"):])[0] if "{" in text else {}
    except (OSError, ValueError) as exc:
        ci_output.report_warning(f"no summary for {args.stage}: could not read {args.result}: {exc}")
        return 0
    if not isinstance(data, Mapping):
        return 0
    published = publish_outputs(data) if args.set_outputs else {}
    markdown = "" if args.no_summary else summary_for(args.stage, data, args.model, args.version)
    output.emit(args, {"summary": markdown, "outputs": published},
                f"{args.stage}: " + ("summary written" if markdown else "no summary")
                + (f", outputs {', '.join(published)}" if published else ""))
    return 0


def publish_outputs(data: Mapping[str, Any]) -> dict[str, str]:
    """image, digest and scoring-uri from a stage result, unless the stage already published them."""
    import os

    from .ci_deployment import step_outputs

    # digest: the registry digest when the image was pushed, else the local image id (content-addressed too)
    values = {"image": data.get("image"), "digest": data.get("digest") or data.get("image_id"),
              "scoring-uri": data.get("scoring_uri")}
    present = step_outputs(os.environ["GITHUB_OUTPUT"]) if os.environ.get("GITHUB_OUTPUT") else {}
    outputs = {k: str(v) for k, v in values.items() if isinstance(v, str) and v and not present.get(k)}
    if outputs:
        ci_output.set_outputs(outputs)
    return outputs
