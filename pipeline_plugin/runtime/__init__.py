"""The scoring runtime that runs inside model images (``python -m pipeline_plugin.runtime``).

It imports nothing from pipeline_plugin outside this package, and only starlette/uvicorn, the
standard library and (optionally) inference-schema, numpy and pandas, so images stay lean.

Entry scripts that need the raw HTTP request use::

    from pipeline_plugin.runtime import rawhttp, AMLRequest, AMLResponse

A script that finds the input unusable raises :class:`BadInput` (answered 400 with its message;
any other exception from run() is a 500)::

    from pipeline_plugin.runtime import BadInput
"""

from .aml import AMLRequest, AMLResponse, rawhttp
from .script import BadInput

__all__ = ["AMLRequest", "AMLResponse", "BadInput", "rawhttp"]
