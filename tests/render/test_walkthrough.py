"""docs/walkthrough.md as written: the commands and flags it shows exist, the MLflow server settings
it names are MLflow's, and the settings it tells users to create are the ones the rendered
pipelines read."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pipeline_plugin.cli import build_parser
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.render import render_pipeline

ROOT = Path(__file__).resolve().parents[2]
WALKTHROUGH = (ROOT / "docs" / "walkthrough.md").read_text()


def commands() -> dict[str, object]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sub.choices


def shown_calls() -> list[list[str]]:
    """Every `pipeline-plugin ...` command line in the walk-through's code blocks."""
    calls = []
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", WALKTHROUGH, re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            if "pipeline-plugin " in line and not line.startswith(("pip ", "export", "cat")):
                words = shlex.split(line[line.index("pipeline-plugin "):])
                calls.append(words[1:])
    return calls


def test_every_command_and_flag_shown_exists():
    choices = commands()
    calls = shown_calls()
    assert len(calls) >= 5
    for argv in calls:
        parser = choices[argv[0]]
        rest = argv[1:]
        sub = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if sub and rest and rest[0] in sub[0].choices:
            parser = sub[0].choices[rest[0]]
            rest = rest[1:]
        flags = set(parser._option_string_actions)
        used = {w for w in rest if w.startswith("--")}
        assert used <= flags, (argv, sorted(used - flags))


@pytest.mark.parametrize("name", ["MLFLOW_WEBHOOK_ALLOWED_SCHEMES", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS",
                                  "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"])
def test_the_mlflow_server_settings_are_mlflows_own(name):
    import mlflow.environment_variables as mev

    assert name in WALKTHROUGH
    assert name in Path(mev.__file__).read_text()


@pytest.mark.parametrize("provider", ["github", "azure-pipelines", "gitlab"])
@pytest.mark.parametrize("setting", ["PIPELINE_PLUGIN_DATABASE_URL", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN",
                                     "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"])
def test_the_settings_it_names_are_the_ones_the_pipelines_read(provider, setting):
    assert setting in WALKTHROUGH
    event = ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "churn",
                                         "version": "1"})
    assert setting in render_pipeline(provider, event, "r", {}).text
