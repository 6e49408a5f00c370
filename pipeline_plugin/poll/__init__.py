"""Polling registries that cannot push (or whose webhooks are not set up).

One module per registry (``mlflow``, ``sagemaker``, ``azureml``, ``huggingface``, ``oci``), each
defining ``build(settings) -> Poller``. A poller lists what its registry holds *now* through the
registry's own client or API and returns it as ``ModelVersionEvent`` s shaped exactly as the
registry's webhook source shapes them (same ``source``, ``kind``, ``registry`` identity, ``model``,
``version``): the inbox stores a version announced by both a webhook and a poller once.

``runner.Runner`` polls one poller on an interval, with exponential backoff while the registry is
down, and keeps its health (``last_success``, ``last_error``, ``next_poll``) for ``/metrics`` and
``pipeline-plugin events pollers``.

Config (the ``poll:`` section of the listener's config; ``pipeline-plugin poll --config`` reads the
same file)::

    poll:
      mlflow: {tracking_uri: http://mlflow:5000, models: all, aliases: true, interval: 60}
      sagemaker: {region: eu-west-1, model_package_groups: [churn]}
      azureml: {subscription: S, resource_group: RG, workspace: W, models: [credit]}
      huggingface: {repositories: [acme/churn], endpoint: https://huggingface.co}
      oci: {registry: http://registry:5000, repositories: [models/churn], host: registry:5000}

Every source also takes ``interval`` (seconds between polls, default 60), ``max_backoff``
(longest wait between retries of a registry that is down, default 300) and ``since`` (an ISO 8601
time: versions the registry dates earlier are skipped; what carries no date, such as an MLflow
alias or an OCI tag, is not filtered).

The first poll of a source and registry is a baseline (:mod:`.baseline`): what the registry holds
then is stored as ``ignored`` events and starts no pipeline; later polls announce what is new. So
is the first poll of a model added to a poller's list later. ``since`` replaces the baseline.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol

from ..errors import ConfigError, suggest
from ..events import ModelVersionEvent

#: ``poll --source`` name -> module under this package
BACKENDS: dict[str, str] = {
    "mlflow": "mlflow",
    "sagemaker": "sagemaker",
    "azureml": "azureml",
    "huggingface": "huggingface",
    "oci": "oci",
}

COMMON_KEYS = ("interval", "max_backoff", "since")
DEFAULT_INTERVAL = 60.0
DEFAULT_MAX_BACKOFF = 300.0


class Poller(Protocol):
    #: the ``poll --source`` name
    name: str
    #: the ``ModelVersionEvent.source`` of its events (``docker-registry`` for ``oci``)
    event_source: str
    #: the names it is set to poll (models, model package groups, repositories: its events'
    #: ``model``), or None for every one the registry lists
    models: list[str] | None

    def describe(self) -> str:
        """Where it polls (an address without credentials), for log lines."""
        ...

    def identity(self) -> str:
        """The registry's key in the poll state: what tells it from every other registry of its
        kind (no credentials); a poll state row is kept under it."""
        ...

    def list_versions(self) -> Iterable[ModelVersionEvent]:
        """What the registry holds now; ``ServiceError`` when the registry cannot be read."""
        ...


@dataclass
class PollSettings:
    source: str
    options: dict[str, Any] = field(default_factory=dict)
    interval: float = DEFAULT_INTERVAL
    max_backoff: float = DEFAULT_MAX_BACKOFF
    where: str = "poll"  # for error messages: "<file>: poll.<source>"
    #: ``since``: versions the registry dates earlier are not announced (epoch seconds); set, it
    #: replaces the first poll's baseline (versions dated at or after it are announced)
    since: float | None = None


def _number(where: str, key: str, value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}.{key}: must be a number of seconds above 0, got {value!r}")
    return float(value)


def parse_section(section: Any, where: str = "poll") -> dict[str, PollSettings]:
    """The ``poll:`` section as ``{source: PollSettings}``; ``ConfigError`` naming the field."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: must map registry names ({', '.join(BACKENDS)}) to settings, "
                          f"got {type(section).__name__}")
    out: dict[str, PollSettings] = {}
    for name, raw in section.items():
        out[str(name)] = parse_source(str(name), raw, f"{where}.{name}")
    return out


def parse_source(name: str, raw: Any, where: str) -> PollSettings:
    if name not in BACKENDS:
        raise ConfigError(f"{where}: unknown registry {name!r}.{suggest(name, BACKENDS)}")
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping of settings, got {type(raw).__name__}")
    module = _module(name)
    allowed = tuple(module.KEYS) + COMMON_KEYS
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}.{suggest(str(key), allowed)}")
    interval = _number(where, "interval", raw.get("interval"), DEFAULT_INTERVAL)
    max_backoff = _number(where, "max_backoff", raw.get("max_backoff"), max(DEFAULT_MAX_BACKOFF, interval))
    options = {k: v for k, v in raw.items() if k not in COMMON_KEYS}
    module.validate(options, where)
    return PollSettings(source=name, options=options, interval=interval, max_backoff=max_backoff, where=where,
                        since=_since(where, raw.get("since")))


def parse_time(value: Any) -> float | None:
    """Epoch seconds of an ISO 8601 time (``Z``, offsets, up to 9 fraction digits; no zone = UTC)."""
    import re
    from datetime import datetime, timezone

    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00").replace("z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _since(where: str, value: Any) -> float | None:
    if value is None:
        return None
    moment = parse_time(value)
    if moment is None:
        raise ConfigError(f"{where}.since: must be an ISO 8601 time such as 2026-12-07T00:00:00Z, got {value!r}")
    return moment


def _module(name: str):
    return importlib.import_module(f"{__name__}.{BACKENDS[name]}")


def build(settings: PollSettings) -> Poller:
    return _module(settings.source).build(settings.options, settings.where)


# ---- helpers shared by the backends ---------------------------------------------------------------
def names_option(options: Mapping[str, Any], key: str, where: str, required: bool = False) -> list[str] | None:
    """A list of names, or ``None`` for ``all`` (or when absent and not required)."""
    value = options.get(key)
    if value is None or value == "all":
        if required and value is None:
            raise ConfigError(f"{where}.{key}: is required: list the names to poll, e.g. {key}: [name]")
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}.{key}: must be 'all' or a list of names, got {value!r}")
    return list(value)


def string_option(options: Mapping[str, Any], key: str, where: str, required: bool = False,
                  hint: str = "") -> str | None:
    value = options.get(key)
    if value is None or value == "":
        if required:
            raise ConfigError(f"{where}.{key}: is required{hint}")
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: must be a string, got {value!r}")
    return value


def bool_option(options: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: must be true or false, got {value!r}")
    return value


def delivery_id(event_source: str, *parts: str) -> str:
    """A poller's delivery id: stable for what is announced once (a version); never equal to a
    webhook's (those come from the registry)."""
    return "poll:" + event_source + ":" + ":".join(parts)


def observed_id(event_source: str, *parts: str) -> str:
    """A delivery id for a *state* (an alias or a tag pointing somewhere), unique per observation,
    so that setting a state back to an earlier value is a new delivery (the inbox then decides by
    the state slot whether it is a change)."""
    return delivery_id(event_source, *parts, f"seen@{time.time():.6f}")


def with_source_defaults(name: str, raw: Any, sources: Mapping[str, Any] | None) -> Any:
    """Fill a poll source's identity from the webhook source's config, so that a version announced
    by both is one event: MLflow's ``tracking_uri`` from ``sources.mlflow.tracking_uri``, the OCI
    ``host`` from ``sources.docker-registry.options.host``."""
    if not isinstance(raw, Mapping) and raw is not None:
        return raw
    raw = dict(raw or {})
    options = getattr((sources or {}).get({"oci": "docker-registry"}.get(name, name)), "options", None) or {}
    if name == "mlflow" and not raw.get("tracking_uri") and isinstance(options.get("tracking_uri"), str):
        raw["tracking_uri"] = options["tracking_uri"]
    if name == "oci" and not raw.get("host") and isinstance(options.get("host"), str):
        raw["host"] = options["host"]
    return raw


def config_section(section: Any, where: str = "poll", sources: Mapping[str, Any] | None = None) -> dict[str, PollSettings]:
    """The listener config's ``poll:`` section, validated, with the webhook sources' identities as
    defaults, each source's poller built once to check what only building finds (a missing
    ``tracking_uri`` ...)."""
    if isinstance(section, Mapping):
        section = {name: with_source_defaults(str(name), raw, sources) for name, raw in section.items()}
    out = parse_section(section, where)
    for settings in out.values():
        build(settings)
    return out
