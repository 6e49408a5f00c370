"""ModelVersionEvent: the one normalized event every source emits.

Sources turn a registry's delivery into zero or more of these; everything downstream (inbox,
rules, render, providers) reads only this type. Its JSON form (``to_dict``) is what
``pipeline-plugin events show ID --json`` prints and what ``--event FILE`` accepts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .errors import PayloadError

SOURCES = ("mlflow", "azureml", "sagemaker", "huggingface", "docker-registry", "cloudevents", "databricks", "wandb")

KINDS = (
    "model_version.created",
    "model_version.approved",
    "model_version.rejected",
    "model_version.deleted",
    "alias.set",
    "alias.deleted",
    "tag.set",
    "tag.deleted",
    "image.pushed",
)


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, str]:
    return MappingProxyType({str(k): "" if v is None else str(v) for k, v in (mapping or {}).items()})


@dataclass(frozen=True)
class ModelVersionEvent:
    """A model version (or image) that a registry announced.

    ``registry`` identifies which registry instance spoke: keys among ``tracking_uri`` (MLflow),
    ``workspace`` (Azure ML), ``model_package_group`` and ``account``/``region`` (SageMaker),
    ``repository`` (Hugging Face, docker registry), ``host`` (also Databricks' workspace), ``entity`` and
    ``project`` (Weights & Biases).
    """

    source: str
    kind: str
    model: str
    version: str
    delivery_id: str
    time: str | None = None  # ISO 8601, UTC, as the registry said it
    tags: Mapping[str, str] = field(default_factory=dict)
    alias: str | None = None
    artifact_uri: str | None = None
    image_uri: str | None = None
    digest: str | None = None
    registry: Mapping[str, str] = field(default_factory=dict)
    approval_status: str | None = None
    is_test: bool = False  # e.g. MLflow's test_webhook example delivery: recorded, never deployed
    source_event_type: str | None = None  # the registry's own name for what happened

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise PayloadError(f"unknown source {self.source!r}; valid: {', '.join(SOURCES)}", field="source")
        if self.kind not in KINDS:
            raise PayloadError(f"unknown kind {self.kind!r}; valid: {', '.join(KINDS)}", field="kind")
        for name in ("model", "version", "delivery_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise PayloadError(f"{name} must be a non-empty string, got {value!r}", field=name)
        object.__setattr__(self, "tags", _frozen(self.tags))
        object.__setattr__(self, "registry", _frozen(self.registry))

    # ---- identity ---------------------------------------------------------------------------
    def registry_key(self) -> str:
        """A stable string naming the registry instance (sorted key=value pairs)."""
        key = self.__dict__.get("_registry_key")
        if key is None:  # the event is frozen: computed once
            key = self.__dict__["_registry_key"] = ";".join(f"{k}={v}" for k, v in sorted(self.registry.items()))
        return key

    def dedupe_key(self) -> str:
        """Two deliveries with the same key describe the same change and are stored once."""
        extra = ""
        if self.kind.startswith("alias."):
            extra = f"|alias={self.alias}"
        elif self.kind.startswith("tag."):
            extra = "|tags=" + ",".join(f"{k}={v}" for k, v in sorted(self.tags.items()))
        elif self.kind == "image.pushed":
            extra = f"|digest={self.digest}"
        if self.is_test:  # a test delivery never stands for (nor swallows) the real change
            extra += "|test"
        return f"{self.source}|{self.registry_key()}|{self.model}|{self.version}|{self.kind}{extra}"

    def state_slot(self) -> str | None:
        """For kinds that *set* a state (an alias points at a version, a tag holds a value, a
        repository tag names a digest): the thing being set, else None. Setting it back to an
        earlier value (alias ``production`` v2 -> v3 -> v2) is a new change, not a duplicate: the
        inbox compares a repeated ``dedupe_key`` with the latest change of its slot."""
        base = f"{self.source}|{self.registry_key()}|{self.model}" + ("|test" if self.is_test else "")
        if self.kind.startswith("alias."):
            return f"{base}|{self.kind}|alias={self.alias}"
        if self.kind.startswith("tag."):
            return f"{base}|{self.version}|{self.kind}|keys=" + ",".join(sorted(self.tags))
        if self.kind == "image.pushed":
            return f"{base}|{self.version}|{self.kind}"
        return None

    # ---- JSON form --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _FIELD_ORDER}
        data["tags"] = dict(self.tags)
        data["registry"] = dict(self.registry)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelVersionEvent":
        """Build an event from its JSON form. Only ``source``, ``kind``, ``model`` and ``version``
        are required; ``delivery_id`` defaults to ``manual:<model>:<version>``. Unknown keys are
        ignored so that ``events show ID --json`` output (which carries ``id``, ``status`` ...)
        can be fed back."""
        if not isinstance(data, Mapping):
            raise PayloadError("an event must be a JSON object", field="(root)")
        kwargs = {k: v for k, v in data.items() if k in _FIELD_NAMES}
        for required in ("source", "kind", "model", "version"):
            if kwargs.get(required) in (None, ""):
                raise PayloadError(
                    f"event field {required!r} is missing; an event needs source, kind, model and version",
                    field=required,
                )
        if isinstance(kwargs["version"], int):
            kwargs["version"] = str(kwargs["version"])
        for name in ("tags", "registry"):
            if kwargs.get(name) is None:
                kwargs.pop(name, None)
            elif not isinstance(kwargs[name], Mapping):
                raise PayloadError(f"event field {name!r} must be an object, got {kwargs[name]!r}", field=name)
        kwargs.setdefault("delivery_id", f"manual:{kwargs['model']}:{kwargs['version']}")
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelVersionEvent":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise PayloadError(f"event file {str(p)!r} does not exist", field="--event") from None
        except json.JSONDecodeError as exc:
            raise PayloadError(f"event file {str(p)!r} is not JSON: {exc}", field="--event") from None
        return cls.from_dict(data)


_FIELD_ORDER = tuple(f.name for f in fields(ModelVersionEvent))
_FIELD_NAMES = frozenset(_FIELD_ORDER)
