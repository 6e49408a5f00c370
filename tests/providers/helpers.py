"""Shared helpers for provider tests: the token the fake services accept, a sample run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contract_server import Contract, ContractServer, Reply  # noqa: E402,F401

from pipeline_plugin.events import ModelVersionEvent  # noqa: E402
from pipeline_plugin.providers import PipelineRun  # noqa: E402

TOKEN = "test-token-5f2c"  # what the fake services accept


def make_event(**overrides) -> ModelVersionEvent:
    data = {
        "source": "mlflow",
        "kind": "model_version.created",
        "model": "iris",
        "version": "7",
        "tags": {"stage": "candidate"},
        "artifact_uri": "models:/iris/7",
    }
    data.update(overrides)
    return ModelVersionEvent.from_dict(data)


def make_run(pipeline: dict, **event) -> PipelineRun:
    return PipelineRun(run_id="0123456789abcdef0123456789abcdef", rule_name="deploy-iris", pipeline=pipeline,
                       event=make_event(**event))


