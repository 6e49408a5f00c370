"""Where CI systems look: results and problems in each system's own format.

- GitHub Actions (``GITHUB_ACTIONS``): outputs appended to ``$GITHUB_OUTPUT``, problems as
  ``::error::`` annotations, Markdown to ``$GITHUB_STEP_SUMMARY``.
- Azure Pipelines (``TF_BUILD``): ``##vso[task.setvariable]`` and ``##vso[task.logissue]``.
- GitLab CI (``GITLAB_CI``): a dotenv report at ``$PIPELINE_PLUGIN_DOTENV`` (default
  ``pipeline-plugin.env``) for ``artifacts:reports:dotenv``.
Outside CI every function here does nothing.
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Mapping


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


def report_error(message: str) -> None:
    if os.environ.get("GITHUB_ACTIONS"):
        print(f"::error::{_escape_gh(message)}", file=sys.stdout)
    if os.environ.get("TF_BUILD"):
        print(f"##vso[task.logissue type=error]{_escape_vso(message)}", file=sys.stdout)
