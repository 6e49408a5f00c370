"""Names used when pipeline-plugin writes deployment state back to the source registry.

The listener must never start a pipeline from an event that its own write-back caused, so the
names live here, shared by the writer (stages) and the reader (worker).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from .events import ModelVersionEvent

ALIAS_PRODUCTION = "production"
ALIAS_PREVIOUS_PRODUCTION = "previous-production"
#: the aliases the write-back moves. A registry's alias event does not say who moved it, so an
#: event for one of these is taken as the write-back's echo wherever it came from: rules that
#: react to people moving an alias use another name (``champion``, ``staging`` ...).
OWN_ALIASES = frozenset({ALIAS_PRODUCTION, ALIAS_PREVIOUS_PRODUCTION})
#: every tag the write-back sets starts with this prefix (status, scoring_uri, run_url ...)
TAG_PREFIX = "pipeline_plugin."


def is_own_writeback(event: ModelVersionEvent) -> bool:
    """True when the event is the echo of an alias or tag that pipeline-plugin itself set."""
    if event.kind in ("alias.set", "alias.deleted"):
        return event.alias in OWN_ALIASES
    if event.kind in ("tag.set", "tag.deleted"):
        return bool(event.tags) and all(key.startswith(TAG_PREFIX) for key in event.tags)
    return False


# ---- writing deployment state back to the registry --------------------------------------------
# One module per registry backend (``writeback_mlflow``, ``writeback_azureml``,
# ``writeback_sagemaker``), each defining ``WRITER`` with:
#   production(model, version, previous_version, info) -> dict   after a production check passed
#   rollback(model, restored_version, from_version, before_restored, info) -> dict
#   status(model, version, status, info) -> dict                 tags only (e.g. failed in staging)
# ``info`` is a :class:`WritebackInfo`. Registries without a write-back (Hugging Face, a docker
# registry, CloudEvents) are skipped with a reason. SDKs are imported only inside the backend.

#: tag names, each under TAG_PREFIX
TAG_STATUS = TAG_PREFIX + "status"  # production, previous-production, rolled-back, failed-staging ...
TAG_SCORING_URI = TAG_PREFIX + "scoring_uri"
TAG_RUN_URL = TAG_PREFIX + "run_url"
TAG_IMAGE = TAG_PREFIX + "image"
TAG_UPDATED_AT = TAG_PREFIX + "updated_at"
TAG_REASON = TAG_PREFIX + "reason"

WRITERS: dict[str, str] = {
    "mlflow": "writeback_mlflow",
    "azureml": "writeback_azureml",
    "sagemaker": "writeback_sagemaker",
}


@dataclass
class WritebackInfo:
    """Where the model version came from and what now runs: passed to every backend."""

    source: str  # events.SOURCES name
    registry: Mapping[str, str] = field(default_factory=dict)  # ModelVersionEvent.registry
    scoring_uri: str | None = None
    run_url: str | None = None
    image: str | None = None  # image digest serving the version
    reason: str | None = None


def parse_registry(value: "str | Mapping[str, str] | None") -> dict[str, str]:
    """``ModelVersionEvent.registry`` from its mapping or its ``registry_key()`` string
    (``k=v;k=v``), as image labels carry it."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    out: dict[str, str] = {}
    for part in str(value).split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def get_writer(source: str) -> Any | None:
    """The write-back backend of a source, or None when that registry has none."""
    module_name = WRITERS.get(source)
    if module_name is None:
        return None
    return importlib.import_module(f"{__package__}.{module_name}").WRITER


def write(action: str, info: WritebackInfo, **kwargs: Any) -> dict[str, Any]:
    """Call ``action`` (production, rollback, status) on the source's backend. Returns what was
    written, or ``{"skipped": reason}``; errors propagate (callers record and report them)."""
    writer = get_writer(info.source)
    if writer is None:
        return {"skipped": f"source {info.source!r} has no write-back (supported: {', '.join(WRITERS)})"}
    return getattr(writer, action)(info=info, **kwargs)
