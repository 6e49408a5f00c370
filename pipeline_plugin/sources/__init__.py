"""Registry webhook sources: pure functions of an HTTP request.

Each backend module (``mlflow``, ``azureml``, ``sagemaker``, ``huggingface``, ``docker_registry``,
``cloudevents``) defines one ``Source`` object named ``SOURCE``. The server calls, in order:

1. ``handshake(request)``: answer a subscription handshake (Event Grid validation, CloudEvents
   ``OPTIONS``) or return ``None``;
2. ``verify(request, secret)``: raise ``AuthenticationError`` unless the delivery is authentic
   (constant-time comparisons; replay window where the scheme has a timestamp);
3. ``parse(request)``: return the ``ModelVersionEvent`` list the delivery announces (possibly empty,
   e.g. a docker-registry ``pull``), or raise ``PayloadError`` naming the field.

Sources never touch disk, network or clock except through ``request.now`` (injectable for tests).
"""

from __future__ import annotations

import importlib
import json
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
}


class Headers(dict):
    """Case-insensitive header mapping (keys stored lower-case)."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        super().__init__()
        for k, v in (items or {}).items():
            self[k] = v

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


@dataclass
class Request:
    method: str
    path: str
    headers: Headers
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)
    now: float = field(default_factory=time.time)

    def json(self) -> Any:
        """The body as JSON, or ``PayloadError`` (400) saying why not."""
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PayloadError(f"body is not valid JSON: {exc}", field="(body)") from None


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or bytes
    headers: dict[str, str] = field(default_factory=dict)


class Source(Protocol):
    name: str

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
