"""Defaults shared by every command, in one place."""

from __future__ import annotations

import os
from pathlib import Path

#: where events, runs and deployment history live unless --state-dir says otherwise
STATE_DIR_ENV = "PIPELINE_PLUGIN_STATE_DIR"
#: the base image `package` builds FROM unless --base-image says otherwise
BASE_IMAGE_ENV = "PIPELINE_PLUGIN_BASE_IMAGE"
DEFAULT_BASE_IMAGE = "pipeline-plugin/base:bookworm"
#: the port the scoring runtime listens on inside the image
RUNTIME_PORT = 5001


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or Path.home() / ".local" / "state" / "pipeline-plugin")


def default_base_image() -> str:
    return os.environ.get(BASE_IMAGE_ENV) or DEFAULT_BASE_IMAGE


def repo_root() -> Path | None:
    """The source checkout this package runs from, if any (for triggers/ and templates/)."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "templates").is_dir() else None


def data_dir(name: str) -> Path:
    """Path of a top-level data folder (``templates``, ``triggers``, ``examples``): the checkout's
    copy when running from source, else the copy shipped inside the wheel (pipeline_plugin/_data)."""
    root = repo_root()
    if root is not None and (root / name).is_dir():
        return root / name
    return Path(__file__).resolve().parent / "_data" / name
