"""Shim: see pipeline_plugin/runtime/compat/README.md."""
