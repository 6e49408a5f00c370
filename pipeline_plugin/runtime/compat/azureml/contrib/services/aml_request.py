"""Shim for Azure ML entry scripts: the runtime's AMLRequest and rawhttp under Azure's import path."""

from pipeline_plugin.runtime.aml import AMLRequest, rawhttp

__all__ = ["AMLRequest", "rawhttp"]
