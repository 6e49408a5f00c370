"""Registry webhook sources: pure functions of an HTTP request.

Each backend module (``mlflow``, ``azureml``, ``sagemaker``, ``huggingface``, ``docker_registry``,
``cloudevents``, ``databricks``, ``wandb``) defines one ``Source`` object named ``SOURCE`` with ``name``, ``auth_scheme`` (its
default scheme in ``auth.SCHEMES``), ``handshake``, ``verify`` and ``parse``.

Order of calls (``receive()`` below does exactly this; a server should call it):

1. ``OPTIONS``: ``handshake(request)`` answers the CloudEvents abuse-protection handshake
   (``WebHook-Allowed-Origin``). It is consent, not authentication: such a request carries no
   signature, so it is answered without ``verify``.
2. ``verify(request, secret)`` (or ``auth.verify(request, secret, scheme)`` when the server config
   picks another scheme): raise ``AuthenticationError`` unless the delivery is authentic
   (constant-time comparisons; replay window where the scheme has a timestamp).
3. ``POST``: ``handshake(request)`` again, *after* verify: Event Grid's
   ``SubscriptionValidationEvent`` is a POST to the endpoint URL, which carries ``?token=``, so it
   is authenticated like any delivery before ``{"validationResponse": code}`` is sent.
4. ``parse(request)``: return the ``ModelVersionEvent`` list the delivery announces (possibly empty,
   e.g. a docker-registry ``pull``), or raise ``PayloadError`` naming the field (its JSON path,
   e.g. ``events[0].target.repository``). Nothing else escapes a parser on bad input.

Each event's ``delivery_id`` is unique per event within its source (a batch of N events gives N
ids; a retry of the same delivery gives the same ids), so it is a sound de-duplication key.

Sources never touch disk, network or clock except through ``request.now`` (injectable for tests).
``request.options`` carries per-source settings from the server config (e.g. ``tracking_uri``
for MLflow, ``host`` for docker-registry).
"""

from __future__ import annotations

import importlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from ..errors import NotFoundError, PayloadError
from ..events import ModelVersionEvent

#: source name as it appears in ``/webhooks/<name>`` -> module under this package
BACKENDS: dict[str, str] = {
    "mlflow": "mlflow",
    "azureml": "azureml",
    "sagemaker": "sagemaker",
    "huggingface": "huggingface",
    "docker-registry": "docker_registry",
    "cloudevents": "cloudevents",
    "databricks": "databricks",
    "wandb": "wandb",
}


class Headers(dict):
    """Case-insensitive header mapping (keys stored lower-case)."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        super().__init__((k.lower(), v) for k, v in (items or {}).items())

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key.lower())

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for k, v in dict(*args, **kwargs).items():
            self[k] = v


@dataclass
class Request:
    method: str
    path: str
    headers: Headers
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)
    now: float = field(default_factory=time.time)
    #: per-source settings from the server config (``tracking_uri``, ``host`` ...); never secrets
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers or {})

    def json(self) -> Any:
        """The body as JSON, or ``PayloadError`` (400) saying why not."""
        if not self.body:
            raise PayloadError("body is empty; a JSON body is expected", field="(body)")
        return loads_json(self.body, "(body)")


#: a ``\uD800``-``\uDFFF`` escape: valid JSON, but alone it is no character (and cannot be stored)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
#: a surrogate's own bytes (``ED A0 80``..``ED BF BF``): not UTF-8, yet ``json.loads`` of bytes decodes
#: them (it uses ``surrogatepass``), so they would reach the store as text it cannot encode
_SURROGATE_BYTES = re.compile(rb"\xed[\xa0-\xbf]")


def loads_json(data: bytes, field: str) -> Any:
    """``data`` as JSON, or ``PayloadError`` (400) naming ``field`` and why not. Strings holding a
    lone UTF-16 surrogate (``"\udc00"``: valid JSON, not text) are refused with the JSON path."""
    try:
        doc = json.loads(data)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digits limit
        raise PayloadError(f"{field} is not valid JSON: {exc}", field=field) from None
    except RecursionError:
        raise PayloadError(f"{field} is not usable JSON: nested too deeply", field=field) from None
    if _SURROGATE_ESCAPE.search(data) or _SURROGATE_BYTES.search(data):
        _refuse_lone_surrogates(doc, field)
    return doc


def _refuse_lone_surrogates(node: Any, path: str) -> None:
    stack = [(node, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                inner = f"{where}.{_printable(key)}"
                _text(key, inner)
                stack.append((item, inner))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, str):
            _text(value, where)


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _text(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(
            f"{where} holds a UTF-16 surrogate (an escape \\uD800-\\uDFFF without its pair, or a surrogate's "
            "raw bytes ED A0..BF, which are not UTF-8), which is not text; send the character itself as UTF-8, "
            "or a complete surrogate pair escape", field=where,
        ) from None


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or bytes
    headers: dict[str, str] = field(default_factory=dict)


class Source(Protocol):
    name: str
    auth_scheme: str

    def handshake(self, request: Request) -> Response | None: ...

    def verify(self, request: Request, secret: str) -> None: ...

    def parse(self, request: Request) -> list[ModelVersionEvent]: ...


def get_source(name: str) -> Source:
    if name not in BACKENDS:
        raise NotFoundError(
            f"no webhook source {name!r}; valid sources: {', '.join(BACKENDS)}", valid=list(BACKENDS)
        )
    module = importlib.import_module(f"{__name__}.{BACKENDS[name]}")
    return module.SOURCE


def secret_env_var(source_name: str) -> str:
    """``PIPELINE_PLUGIN_<S>_SECRET``: upper case, ``-`` becomes ``_``."""
    return "PIPELINE_PLUGIN_" + source_name.upper().replace("-", "_") + "_SECRET"


def receive(source: Source, request: Request, secret: str | None, scheme: str | None = None) -> "Response | list[ModelVersionEvent]":
    """Handle one request in the documented order: a ``Response`` to send as is (a handshake), or
    the events to store. ``secret=None`` skips ``verify``: only for a server started with
    ``--insecure-no-auth``. ``scheme`` overrides ``source.auth_scheme``."""
    from . import auth

    if request.method.upper() == "OPTIONS":
        answer = source.handshake(request)
        if answer is None:
            raise PayloadError(
                f"source {source.name!r} has no OPTIONS handshake; deliveries are POST requests", field="(method)"
            )
        return answer
    if secret is not None:
        if scheme is None or scheme == source.auth_scheme:
            source.verify(request, secret)
        else:
            auth.verify(request, secret, scheme)
    answer = source.handshake(request)
    if answer is not None:
        return answer
    return source.parse(request)


class BaseSource:
    """Shared defaults: no handshake; ``verify`` delegates to ``auth.SCHEMES[auth_scheme]``."""

    name = ""
    auth_scheme = "token"

    def handshake(self, request: Request) -> Response | None:
        return None

    def verify(self, request: Request, secret: str) -> None:
        from . import auth

        auth.SCHEMES[self.auth_scheme](request, secret)

    def parse(self, request: Request) -> list[ModelVersionEvent]:  # pragma: no cover - abstract
        raise NotImplementedError


def options_handshake(request: Request) -> Response | None:
    """CloudEvents HTTP webhook abuse protection (spec section 4.2): answer ``OPTIONS`` with
    ``WebHook-Allowed-Origin`` echoing ``WebHook-Request-Origin`` and, when a rate was asked for,
    ``WebHook-Allowed-Rate: *``. Returns ``None`` for other methods."""
    if request.method.upper() != "OPTIONS":
        return None
    headers = request.headers if isinstance(request.headers, Headers) else Headers(request.headers or {})
    origin = headers.get("WebHook-Request-Origin")
    if not isinstance(origin, str) or not origin.strip():
        raise PayloadError(
            "OPTIONS without a WebHook-Request-Origin header is not a CloudEvents handshake",
            field="WebHook-Request-Origin",
        )
    answer = {"WebHook-Allowed-Origin": origin.strip(), "Allow": "POST"}
    if headers.get("WebHook-Request-Rate") is not None:
        answer["WebHook-Allowed-Rate"] = "*"
    return Response(status=200, body=None, headers=answer)
