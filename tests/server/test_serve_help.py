"""`pipeline-plugin serve --help` names every source the listener accepts (databricks, wandb, ...):
the list comes from pipeline_plugin.events.SOURCES, so a new source can never be left out of it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from pipeline_plugin.events import SOURCES
from pipeline_plugin.sources import BACKENDS


def test_serve_help_lists_every_source_it_accepts():
    out = subprocess.run([sys.executable, "-m", "pipeline_plugin.cli", "serve", "--help"], capture_output=True,
                         text=True, timeout=60, check=False, env={**os.environ, "COLUMNS": "1000"})
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    listed = re.search(r"POST /webhooks/<source> \(([^)]*)\)", text)
    assert listed, text
    names = [n.strip() for n in listed.group(1).split(",")]
    assert names == list(SOURCES)
    assert set(names) == set(BACKENDS)  # the routes the listener really serves
    assert {"databricks", "wandb"} <= set(names)
