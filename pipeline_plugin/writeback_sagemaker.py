"""Write-back to SageMaker Model Registry: a model package's ``ModelApprovalStatus`` and tags.
Not implemented yet: needs boto3 and AWS credentials. The seam is here so that a SageMaker source
reports a clear message instead of silently not writing back."""

from __future__ import annotations

from typing import Any

from .writeback import NotImplementedWriter


class _SageMakerWriter(NotImplementedWriter):
    name = "sagemaker"

    def _unsupported(self, info: Any) -> dict[str, Any]:
        group = dict(info.registry).get("model_package_group", "?")
        return {
            "skipped": "write-back to SageMaker is not implemented yet (would tag the model package in "
            f"group {group} with pipeline_plugin.status/scoring_uri); the deployment itself is unaffected"
        }


WRITER = _SageMakerWriter()
