"""Write-back to Azure Machine Learning: model version tags (same names as MLflow's, see
:mod:`pipeline_plugin.writeback`). Not implemented yet: needs the azure-ai-ml SDK and a workspace
credential. The seam is here so that a configured Azure ML source fails with a clear message
instead of silently not writing back."""

from __future__ import annotations

from typing import Any

from .writeback import NotImplementedWriter


class _AzureMLWriter(NotImplementedWriter):
    name = "azureml"

    def _unsupported(self, info: Any) -> dict[str, Any]:
        return {
            "skipped": "write-back to Azure ML is not implemented yet (would set tags "
            "pipeline_plugin.status/scoring_uri/run_url on the model version in workspace "
            f"{dict(info.registry).get('workspace', '?')}); the deployment itself is unaffected"
        }


WRITER = _AzureMLWriter()

