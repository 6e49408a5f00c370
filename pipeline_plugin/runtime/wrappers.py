"""``AMLRequest`` and ``AMLResponse`` on werkzeug's own request/response wrappers.

Azure's classes are Flask's ``Request``/``Response`` (werkzeug's, with Flask's defaults), so building
on werkzeug gives entry scripts the same headers object (``resp.headers['X'] = ...``, Flask's
casing when iterating), mimetype handling, streaming (a generator body), ``get_data``, ``files``,
``form``, ``args``, ``full_path`` ... instead of an imitation.

Only ``@rawhttp`` scripts (and scripts that import these classes) load this module: the plain-JSON
and ``@input_schema`` paths never import werkzeug.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any, Mapping

from werkzeug.wrappers import Request as _Request
from werkzeug.wrappers import Response as _Response


class AMLRequest(_Request):
    """The HTTP request a ``@rawhttp`` run() receives: a werkzeug ``Request`` (as Azure's, a Flask one)."""

    # Flask's Request takes these from the app config; these are Flask 3's defaults
    max_content_length = None
    max_form_memory_size = 500_000
    max_form_parts = 1_000

    @classmethod
    def from_scope(cls, scope: dict, body: bytes) -> "AMLRequest":
        """Build the request from an ASGI scope and its (fully read) body, with the WSGI environ a
        gunicorn + Flask server (azureml-inference-server-http) would give the script: repeated
        headers joined with ``,``, header names with ``_`` dropped (gunicorn's default)."""
        server = scope.get("server") or ("localhost", 80)
        client = scope.get("client")
        path = scope.get("root_path", "") + scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": "",
            "PATH_INFO": path.encode("utf-8").decode("latin-1"),
            "QUERY_STRING": query,
            "RAW_URI": scope.get("raw_path", b"").decode("latin-1") + (f"?{query}" if query else ""),
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1]) if server[1] is not None else "",
            "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
            "REMOTE_ADDR": client[0] if client else "",
            "REMOTE_PORT": str(client[1]) if client else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scope.get("scheme", "http"),
            "wsgi.input": io.BytesIO(body),
            "wsgi.input_terminated": True,  # the body is complete: read it even without Content-Length
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1")
            if "_" in name:
                continue
            value = raw_value.decode("latin-1")
            upper = name.upper().replace("-", "_")
            if upper == "CONTENT_TYPE":
                key = "CONTENT_TYPE"
            elif upper == "CONTENT_LENGTH":
                key = "CONTENT_LENGTH"
            else:
                key = "HTTP_" + upper
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return cls(environ)


class AMLResponse(_Response):
    """``AMLResponse(message, status_code, response_headers={}, json_str=False, run_function_failed=False)``.

    As Azure's: ``json_str=True`` JSON-encodes ``message``; ``message=None`` answers ``{}``; otherwise
    ``message`` (str, bytes or an iterable/generator of them, which is streamed chunked) is the body
    as it is, ``text/html`` unless a Content-Type is given; a header value holding commas is sent as
    repeated headers. Any other keyword (``mimetype=``, ``content_type=``) goes to werkzeug's
    ``Response``, and the object is a werkzeug ``Response`` (``resp.headers[...] = ...``,
    ``resp.mimetype = ...``)."""

    default_mimetype = "text/html"  # Flask's default

    def __init__(self, message: Any = None, status_code: int = 200, response_headers: Mapping[str, str] | None = None,
                 json_str: bool = False, run_function_failed: bool = False, **kwargs: Any):
        response_headers = dict(response_headers or {})
        if message is None:
            super().__init__(json.dumps({}), status=status_code, mimetype="application/json")
        elif json_str:
            super().__init__(json.dumps(message), status=status_code, mimetype="application/json")
        else:
            super().__init__(message, status=status_code, **kwargs)
            if any(k.lower() == "content-type" for k in response_headers):
                self.headers.remove("Content-Type")  # the loop below adds the script's
        self.headers["x-ms-run-function-failed"] = str(bool(run_function_failed))
        for header, value in response_headers.items():
            for v in str(value).split(","):
                self.headers.add_header(header, v.strip())
