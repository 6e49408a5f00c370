"""Deploy targets: where a service's environments (staging, production) run.

One module per backend (``docker``, ``process``, ``kubernetes``), each defining ``TARGET`` with the
verbs below. Every verb is idempotent: creating what exists updates it, deleting what is gone is a
no-op. ``update`` replaces the running version with zero failed requests (start the new instance,
wait until ready, switch the stable address, drain and stop the old one).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from .. import settings
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
    # horizontal autoscaling (kubernetes): (min_replicas, max_replicas, target CPU utilization %)
    autoscaler: tuple[int, int, int] | None = None


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


#: progress callback: one human-readable line per step (``output.Progress`` fits)
ProgressFn = Callable[[str], None]


class Target(Protocol):
    name: str

    # ``progress`` is optional: callers that do not pass it get no progress lines
    def create(self, spec: DeploymentSpec, progress: ProgressFn | None = None) -> Deployment: ...

    def update(self, spec: DeploymentSpec, progress: ProgressFn | None = None) -> Deployment: ...

    def get(self, service: str, env: str) -> Deployment | None: ...

    def delete(self, service: str, env: str) -> None: ...

    def list(self, service: str | None = None) -> list[Deployment]: ...


def get_target(name: str) -> Target:
    if name not in BACKENDS:
        raise ConfigError(f"no deploy target {name!r}.{suggest(name, BACKENDS)}")
    module = importlib.import_module(f"{__name__}.{BACKENDS[name]}")
    return module.TARGET


#: service and environment names: lowercase DNS labels, so that they are valid as container names,
#: file names and Kubernetes object names alike
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def check_name(field_name: str, value: str) -> str:
    """Raise ConfigError unless ``value`` is a lowercase DNS label (``fraud-model``, ``staging``)."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(
            f"{field_name} {value!r} is not a valid name: use lowercase letters, digits and '-', "
            "start and end with a letter or digit, at most 63 characters (for example 'fraud-model')"
        )
    return value


def check_spec(spec: DeploymentSpec) -> DeploymentSpec:
    """Validate the fields every target relies on; raise ConfigError naming the field and fix."""
    check_name("service", spec.service)
    check_name("env", spec.env)
    if not spec.image or not isinstance(spec.image, str):
        raise ConfigError("image is empty; pass --image with an image reference or digest (sha256:...)")
    if spec.port is not None and (isinstance(spec.port, bool) or not 1 <= int(spec.port) <= 65535):
        raise ConfigError(f"port {spec.port!r} is not a TCP port; give a number between 1 and 65535")
    for name in ("cpu_cores", "memory_gb"):
        value = getattr(spec, name)
        if value is not None and not value > 0:
            raise ConfigError(f"{name} is {value!r}; give a number greater than 0")
    if spec.replicas < 1:
        raise ConfigError(f"replicas is {spec.replicas!r}; give at least 1")
    for key in spec.keys:
        if not key or "," in key or any(c.isspace() for c in key):
            raise ConfigError("a scoring key is empty or contains a comma or white space; scoring keys cannot")
    return spec


def state_root(target_name: str, state_dir: Path | None = None) -> Path:
    """Where a target keeps its per-(service, env) state: ``<state dir>/targets/<target>``."""
    return Path(state_dir or settings.default_state_dir()) / "targets" / target_name


#: the host folder of stable addresses (nginx prefixes) when the store is a shared database
PROXY_DIR_ENV = "PIPELINE_PLUGIN_PROXY_DIR"


def address_root(target_name: str, store: Any, state_dir: Path | None = None) -> Path:
    """Where a local target puts the folders of new stable addresses (``<root>/<service>/<env>``;
    each deployment records its own folder). ``$PIPELINE_PLUGIN_PROXY_DIR/<database>/<target>`` when
    set; else, with the embedded store, ``<state dir>/targets/<target>`` as before; else, with a shared
    database, ``~/.local/state/pipeline-plugin/addresses/<database>/<target>``: one folder per host and
    database, the same for every job's state dir (``<database>`` is ``store.scope``, no secrets)."""
    import os

    if os.environ.get(PROXY_DIR_ENV):
        return Path(os.environ[PROXY_DIR_ENV]).expanduser().resolve() / store.scope / target_name
    if store.embedded:
        return state_root(target_name, state_dir)
    return Path.home() / ".local" / "state" / "pipeline-plugin" / "addresses" / store.scope / target_name


def stable_uris(host: str, port: int) -> dict[str, str]:
    base = f"http://{host}:{port}"
    return {"scoring_uri": f"{base}/score", "swagger_uri": f"{base}/swagger.json", "health_uri": f"{base}/"}
