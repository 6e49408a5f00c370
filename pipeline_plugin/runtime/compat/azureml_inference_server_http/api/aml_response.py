"""Shim for Azure ML entry scripts: the runtime's AMLResponse under Azure's import path."""

from pipeline_plugin.runtime.aml import AMLResponse

__all__ = ["AMLResponse"]
