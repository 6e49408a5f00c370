"""Where CI systems look: results and problems in each system's own format.

- GitHub Actions (``GITHUB_ACTIONS``): outputs appended to ``$GITHUB_OUTPUT``, problems as
  ``::error::`` annotations, Markdown to ``$GITHUB_STEP_SUMMARY``.
- Azure Pipelines (``TF_BUILD``): ``##vso[task.setvariable]`` and ``##vso[task.logissue]``.
- GitLab CI (``GITLAB_CI``): a dotenv report at ``$PIPELINE_PLUGIN_DOTENV`` (default
  ``pipeline-plugin.env``) for ``artifacts:reports:dotenv``.
Outside CI every function here does nothing.

Summaries: ``add_summary`` appends Markdown to ``$GITHUB_STEP_SUMMARY`` and, under Azure Pipelines,
uploads it to the run's Extensions tab (``##vso[task.uploadsummary]``). ``stage_summary`` builds the
report a person reads at a glance (model, version, image digest, smoke-test table, what was promoted
or rolled back). The CI system's own deployment records are :mod:`pipeline_plugin.ci.deployments`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from typing import Any, Mapping, Sequence


def _escape_gh(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_vso(value: str) -> str:
    return value.replace("%", "%AZP25").replace("\r", "%0D").replace("\n", "%0A").replace("]", "%5D").replace(";", "%3B")


def set_outputs(outputs: Mapping[str, object]) -> None:
    """Publish step outputs (``scoring-uri``, ``image``, ``digest`` ...)."""
    items = {k: "" if v is None else str(v) for k, v in outputs.items()}
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as fh:
            for key, value in items.items():
                delim = f"ghadelim_{uuid.uuid4().hex}"
                fh.write(f"{key}<<{delim}\n{value}\n{delim}\n")
    if os.environ.get("TF_BUILD"):
        for key, value in items.items():
            print(f"##vso[task.setvariable variable={key.replace('-', '_')};isOutput=true]{_escape_vso(value)}")
    if os.environ.get("GITLAB_CI"):
        path = os.environ.get("PIPELINE_PLUGIN_DOTENV", "pipeline-plugin.env")
        with open(path, "a", encoding="utf-8") as fh:
            for key, value in items.items():
                fh.write(f"{key.upper().replace('-', '_')}={value.replace(chr(10), ' ')}\n")


def add_summary(markdown: str) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(markdown.rstrip() + "\n\n")
    if os.environ.get("TF_BUILD"):
        folder = os.environ.get("AGENT_TEMPDIRECTORY") or tempfile.gettempdir()
        file = os.path.join(folder, f"pipeline-plugin-summary-{uuid.uuid4().hex[:12]}.md")
        with open(file, "w", encoding="utf-8") as fh:
            fh.write(markdown.rstrip() + "\n")
        print(f"##vso[task.uploadsummary]{_escape_vso(file)}", file=sys.stdout)


def report_warning(message: str) -> None:
    if os.environ.get("GITHUB_ACTIONS"):
        print(f"::warning::{_escape_gh(message)}", file=sys.stdout)
    if os.environ.get("TF_BUILD"):
        print(f"##vso[task.logissue type=warning]{_escape_vso(message)}", file=sys.stdout)


def _md(value: object) -> str:
    """A value for a Markdown table cell: code-formatted, pipes and newlines neutralised."""
    text = "" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\r", " ").replace("\n", " ").replace("`", "'")
    return f"`{text}`" if text else "-"


def stage_summary(
    title: str,
    *,
    model: str | None = None,
    version: str | None = None,
    image: str | None = None,
    digest: str | None = None,
    environment: str | None = None,
    scoring_uri: str | None = None,
    outcome: str | None = None,
    checks: Sequence[Mapping[str, Any]] = (),
    latency_ms: Mapping[str, float] | None = None,
    error_rate: float | None = None,
    extra: Mapping[str, object] | None = None,
) -> str:
    """The Markdown report a person reads at a glance; also appended to the job summary.

    ``checks``: rows with ``name``, ``passed`` (bool) and ``detail``; ``latency_ms``: percentiles
    such as ``{"p50": 12.0, "p95": 30.1, "p99": 41.0}``; ``outcome``: e.g. ``promoted`` or
    ``rolled back to 3``."""
    icon = {"passed": "✅", "failed": "❌"}
    lines = [f"### {title}", "", "| | |", "|---|---|"]
    for label, value in (("model", model), ("version", version), ("environment", environment),
                         ("image", image), ("digest", digest), ("scoring URI", scoring_uri),
                         ("outcome", outcome), *((extra or {}).items())):
        if value not in (None, ""):
            lines.append(f"| {label} | {_md(value)} |")
    if latency_ms:
        lines.append("| latency | " + ", ".join(f"{k} {float(v):.1f} ms" for k, v in latency_ms.items()) + " |")
    if error_rate is not None:
        lines.append(f"| error rate | {100 * float(error_rate):.2f}% |")
    if checks:
        lines += ["", "| check | result | detail |", "|---|---|---|"]
        for check in checks:
            status = "passed" if check.get("passed") else "failed"
            lines.append(f"| {_md(check.get('name'))} | {icon[status]} {status} | {_md(check.get('detail'))} |")
    markdown = "\n".join(lines)
    add_summary(markdown)
    return markdown


def report_error(message: str) -> None:
    if os.environ.get("GITHUB_ACTIONS"):
        print(f"::error::{_escape_gh(message)}", file=sys.stdout)
    if os.environ.get("TF_BUILD"):
        print(f"##vso[task.logissue type=error]{_escape_vso(message)}", file=sys.stdout)
