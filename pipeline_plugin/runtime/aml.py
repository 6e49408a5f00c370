"""Raw HTTP access for entry scripts: ``rawhttp``, ``AMLRequest``, ``AMLResponse``.

These are what ``azureml_inference_server_http.api.aml_request`` / ``aml_response`` (and the older
``azureml.contrib.services``) provide, so an Azure ML entry script only changes its import (or keeps
Azure's, through the shims in ``compat/``):

    from pipeline_plugin.runtime import rawhttp, AMLRequest, AMLResponse

``AMLRequest``/``AMLResponse`` are werkzeug's request/response wrappers (Azure's are Flask's, which
are werkzeug's): see ``wrappers.py``. They are loaded on first use, so a script that never touches
them (and the runtime serving it) does not import werkzeug.
"""

from __future__ import annotations

#: attribute set on a run() function decorated with @rawhttp
RAWHTTP_ATTR = "__pipeline_plugin_rawhttp__"

# Azure keeps a module-level flag; kept for scripts that read it.
_rawHttpRequested = False


def rawhttp(func):
    """Mark ``run()`` as taking the whole HTTP request (an :class:`AMLRequest`) instead of JSON."""
    global _rawHttpRequested
    _rawHttpRequested = True
    try:
        setattr(func, RAWHTTP_ATTR, True)
    except (AttributeError, TypeError):  # builtins or objects refusing attributes: the flag still says so
        pass
    return func


def __getattr__(name: str):
    if name in ("AMLRequest", "AMLResponse"):
        from . import wrappers

        return getattr(wrappers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
