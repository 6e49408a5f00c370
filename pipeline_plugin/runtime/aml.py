"""Raw HTTP access for entry scripts: ``rawhttp``, ``AMLRequest``, ``AMLResponse``.

These mirror ``azureml_inference_server_http.api.aml_request`` / ``aml_response`` (and the older
``azureml.contrib.services``) closely enough that an Azure ML entry script only changes its import:

    from pipeline_plugin.runtime import rawhttp, AMLRequest, AMLResponse

This module imports only the standard library: it is loaded by user scripts at import time.
"""

from __future__ import annotations

import json
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl

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


class Headers:
    """Case-insensitive, multi-valued, read-only request headers (``get``, ``[]``, ``in``, ``items``)."""

    __slots__ = ("_items", "_index")

    def __init__(self, items: Iterable[tuple[str, str]]):
        self._items = list(items)
        self._index: dict[str, str] = {}
        for name, value in self._items:
            key = name.lower()
            # repeated headers are joined with ", " (RFC 9110 5.3), as werkzeug does for .get()
            self._index[key] = f"{self._index[key]}, {value}" if key in self._index else value

    def get(self, name: str, default: Any = None, type: Any = None) -> Any:  # noqa: A002 - werkzeug's name
        value = self._index.get(name.lower())
        return default if value is None else _converted(value, default, type)

    def getlist(self, name: str) -> list[str]:
        key = name.lower()
        return [v for n, v in self._items if n.lower() == key]

    def __getitem__(self, name: str) -> str:
        value = self._index.get(name.lower())
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self):
        return list(self._items)

    def keys(self):
        return [n for n, _ in self._items]

    def to_dict(self) -> dict[str, str]:
        return {name: self[name] for name, _ in self._items}

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _converted(value: Any, default: Any, type: Any) -> Any:  # noqa: A002 - werkzeug's name
    """werkzeug's ``get(..., type=)``: ``type(value)``, or ``default`` when that fails."""
    if type is None:
        return value
    try:
        return type(value)
    except (TypeError, ValueError):
        return default


class MultiDict(dict):
    """A dict of first values that also remembers every value (``getlist``), like werkzeug's."""

    def __init__(self, pairs: Iterable[tuple[str, Any]] = ()):
        super().__init__()
        self._lists: dict[str, list[Any]] = {}
        for key, value in pairs:
            self._lists.setdefault(key, []).append(value)
            if key not in self:
                super().__setitem__(key, value)

    def get(self, key, default=None, type=None):  # noqa: A002 - werkzeug's name
        return default if key not in self else _converted(self[key], default, type)

    def getlist(self, key) -> list[Any]:
        return list(self._lists.get(key, []))


class FileStorage:
    """One uploaded file of a multipart/form-data body (``filename``, ``content_type``, ``read()``)."""

    def __init__(self, name: str, filename: str | None, content_type: str, data: bytes):
        import io

        self.name = name
        self.filename = filename
        self.content_type = content_type
        self.mimetype = content_type.split(";")[0].strip()
        self.stream = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(size)

    def save(self, dst) -> None:
        data = self.stream.getvalue()
        if hasattr(dst, "write"):
            dst.write(data)
        else:
            with open(dst, "wb") as fh:
                fh.write(data)

    def __repr__(self) -> str:
        return f"<FileStorage {self.filename!r} ({self.content_type})>"


class AMLRequest:
    """The HTTP request handed to a ``@rawhttp`` run(): the subset of Flask's request scripts use."""

    def __init__(self, method: str, path: str, query_string: bytes, headers: Headers, body: bytes,
                 remote_addr: str | None = None, scheme: str = "http", host: str = ""):
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self._body = body
        self.remote_addr = remote_addr
        self.scheme = scheme
        self.host = host or headers.get("host", "")
        self._args: MultiDict | None = None
        self._form: tuple[MultiDict, MultiDict] | None = None

    # --- body -----------------------------------------------------------------------------
    def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False):
        return self._body.decode("utf-8", "replace") if as_text else self._body

    @property
    def data(self) -> bytes:
        return self._body

    @property
    def stream(self):
        import io

        return io.BytesIO(self._body)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    @property
    def mimetype(self) -> str:
        return (self.content_type or "").split(";")[0].strip().lower()

    @property
    def content_length(self) -> int:
        return len(self._body)

    @property
    def is_json(self) -> bool:
        mt = self.mimetype
        return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True):
        if not (force or self.is_json):
            if silent:
                return None
            raise ValueError("the request's Content-Type is not application/json")
        try:
            return json.loads(self._body)
        except ValueError:
            if silent:
                return None
            raise

    @property
    def json(self):
        return self.get_json(silent=False)

    # --- URL ------------------------------------------------------------------------------
    @property
    def args(self) -> MultiDict:
        if self._args is None:
            self._args = MultiDict(parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True))
        return self._args

    @property
    def full_path(self) -> str:
        return f"{self.path}?{self.query_string.decode('latin-1')}"

    @property
    def url(self) -> str:
        qs = f"?{self.query_string.decode('latin-1')}" if self.query_string else ""
        return f"{self.scheme}://{self.host}{self.path}{qs}"

    # --- forms ----------------------------------------------------------------------------
    def _parse_form(self) -> tuple[MultiDict, MultiDict]:
        if self._form is None:
            fields: list[tuple[str, Any]] = []
            files: list[tuple[str, Any]] = []
            mt = self.mimetype
            if mt == "application/x-www-form-urlencoded":
                fields = parse_qsl(self._body.decode("utf-8", "replace"), keep_blank_values=True)
            elif mt == "multipart/form-data":
                head = f"Content-Type: {self.content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
                message = BytesParser(policy=HTTP).parsebytes(head + self._body)
                for part in message.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    if name is None:
                        continue
                    payload = part.get_payload(decode=True) or b""
                    filename = part.get_filename()
                    if filename is not None:
                        files.append((name, FileStorage(name, filename, part.get_content_type(), payload)))
                    else:
                        charset = part.get_content_charset() or "utf-8"
                        fields.append((name, payload.decode(charset, "replace")))
            self._form = (MultiDict(fields), MultiDict(files))
        return self._form

    @property
    def form(self) -> MultiDict:
        return self._parse_form()[0]

    @property
    def files(self) -> MultiDict:
        return self._parse_form()[1]

    @property
    def values(self) -> MultiDict:
        return MultiDict([*self.args.items(), *self.form.items()])

    def __repr__(self) -> str:
        return f"<AMLRequest {self.method} {self.full_path!r}>"


class AMLResponse:
    """A response chosen by run(): ``AMLResponse(message, status_code, response_headers={}, json_str=False)``.

    Same meaning as Azure's: ``json_str=True`` JSON-encodes ``message``; otherwise ``message`` (str or
    bytes) is the body as-is; ``message=None`` gives ``{}``. A header value holding commas is sent as
    repeated headers, as Azure does."""

    def __init__(self, message: Any, status_code: int, response_headers: Mapping[str, str] | None = None,
                 json_str: bool = False, run_function_failed: bool = False):
        self.status_code = int(status_code)
        headers: list[tuple[str, str]] = []
        user_headers = dict(response_headers or {})
        if message is None:
            body = b"{}"
            headers.append(("content-type", "application/json"))
        elif json_str:
            body = json.dumps(message).encode("utf-8")
            headers.append(("content-type", "application/json"))
        else:
            body = message.encode("utf-8") if isinstance(message, str) else bytes(message)
            if not any(k.lower() == "content-type" for k in user_headers):
                headers.append(("content-type", "text/html; charset=utf-8"))
        self.run_function_failed = bool(run_function_failed)
        for name, value in user_headers.items():
            for v in str(value).split(","):
                headers.append((name, v.strip()))
        self.headers = headers
        self.body = body

    def get_data(self, as_text: bool = False):
        return self.body.decode("utf-8", "replace") if as_text else self.body

    @property
    def data(self) -> bytes:
        return self.body

    def __repr__(self) -> str:
        return f"<AMLResponse {self.status_code} {len(self.body)} bytes>"
