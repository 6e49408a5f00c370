"""Deploy targets: where a service's environments (staging, production) run.

One module per backend (``docker``, ``process``, ``kubernetes``), each defining ``TARGET`` with the
verbs below. Every verb is idempotent: creating what exists updates it, deleting what is gone is a
no-op. ``update`` replaces the running version with zero failed requests (start the new instance,
wait until ready, switch the stable address, drain and stop the old one).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Protocol

from ..errors import ConfigError, suggest

BACKENDS: dict[str, str] = {"docker": "docker", "process": "process", "kubernetes": "kubernetes"}


@dataclass(frozen=True)
class DeploymentSpec:
    service: str
    env: str  # "staging", "production", ...
    image: str  # reference or digest (sha256:...) of the model image
    port: int | None = None  # the stable address's port; None: the target picks one and keeps it
    cpu_cores: float | None = None
    memory_gb: float | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    keys: tuple[str, ...] = ()  # scoring keys; /score requires `Authorization: Bearer <key>` when set
    replicas: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)  # extra labels (run id, event id ...)


@dataclass
class Deployment:
    service: str
    env: str
    image: str
    image_id: str  # content digest of what runs (sha256:...)
    scoring_uri: str
    swagger_uri: str
    health_uri: str
    model: str | None = None
    version: str | None = None
    status: str = "running"  # running, stopped, failed
    created_at: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Target(Protocol):
    name: str

    def create(self, spec: DeploymentSpec) -> Deployment: ...

    def update(self, spec: DeploymentSpec) -> Deployment: ...

    def get(self, service: str, env: str) -> Deployment | None: ...

    def delete(self, service: str, env: str) -> None: ...

    def list(self, service: str | None = None) -> list[Deployment]: ...


def get_target(name: str) -> Target:
    if name not in BACKENDS:
        raise ConfigError(f"no deploy target {name!r}.{suggest(name, BACKENDS)}")
    module = importlib.import_module(f"{__name__}.{BACKENDS[name]}")
    return module.TARGET
