"""The Azure DevOps extension (extensions/azure-devops), built and packaged the way it is published:
build.js lays it out (each task folder with the shared module and azure-pipelines-task-lib), `tfx
extension create` packages it offline, and the .vsix is unpacked as the agent unpacks a task."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "extensions" / "azure-devops"
TOOLS = ROOT / ".tools" / "node_modules"
MANIFEST = json.loads((EXT / "vss-extension.json").read_text())
TASKS = [c["properties"]["name"].split("/", 1)[1] for c in MANIFEST["contributions"]
         if c["type"] == "ms.vss-distributed-task.task"]


@pytest.fixture(scope="session")
def vsix(tmp_path_factory) -> Path:
    """The packaged extension; node, tfx-cli and azure-pipelines-task-lib come from scripts/setup.sh
    (missing ones fail the test: CI installs them)."""
    assert shutil.which("node"), "node is not installed: scripts/setup.sh needs Node.js 20"
    assert (TOOLS / ".bin" / "tfx").exists(), "tfx-cli is not in .tools: run scripts/setup.sh"
    out = tmp_path_factory.mktemp("azext")
    proc = subprocess.run(["node", str(EXT / "build.js"), "--out", str(out / "layout"), "--vsix", str(out / "ext.vsix")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "ext.vsix"


@pytest.fixture(scope="session")
def unpacked(vsix, tmp_path_factory) -> Path:
    """The .vsix's content, as the agent downloads and unpacks a task of the installed extension."""
    dest = tmp_path_factory.mktemp("vsix")
    with zipfile.ZipFile(vsix) as zf:
        zf.extractall(dest)
    return dest
