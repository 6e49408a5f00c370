"""The scoring runtime that runs inside model images (``python -m pipeline_plugin.runtime``).

It imports nothing from pipeline_plugin outside this package, and only uvicorn, the standard library
and (when the script uses them) werkzeug, inference-schema, numpy and pandas, so images stay lean.

Entry scripts that need the raw HTTP request use::

    from pipeline_plugin.runtime import rawhttp, AMLRequest, AMLResponse

(werkzeug's request/response wrappers, as Azure's are Flask's; loaded on first use).

A script that finds the input unusable raises :class:`BadInput` (answered 400 with its message;
any other exception from run() is a 500)::

    from pipeline_plugin.runtime import BadInput
"""

from .aml import rawhttp
from .script import BadInput

__all__ = ["AMLRequest", "AMLResponse", "BadInput", "rawhttp"]


def __getattr__(name: str):
    if name in ("AMLRequest", "AMLResponse"):
        from . import wrappers

        return getattr(wrappers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
