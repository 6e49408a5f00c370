"""Helpers for rule tests: write rule files, build events."""

from __future__ import annotations

import textwrap
from pathlib import Path

from pipeline_plugin.events import ModelVersionEvent


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def event(**overrides) -> ModelVersionEvent:
    data = {
        "source": "mlflow",
        "kind": "model_version.created",
        "model": "churn-model",
        "version": "3",
        "delivery_id": "d-1",
        "registry": {"tracking_uri": "http://mlflow.internal:5000"},
    }
    data.update(overrides)
    return ModelVersionEvent.from_dict(data)
