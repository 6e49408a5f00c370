"""Names used when pipeline-plugin writes deployment state back to the source registry.

The listener must never start a pipeline from an event that its own write-back caused, so the
names live here, shared by the writer (stages) and the reader (worker).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from .events import ModelVersionEvent
from .history import now_iso

ALIAS_PRODUCTION = "production"
ALIAS_PREVIOUS_PRODUCTION = "previous-production"
#: the aliases the write-back moves. A registry's alias event does not say who moved it, so an
#: event for one of these is taken as the write-back's echo wherever it came from: rules that
#: react to people moving an alias use another name (``champion``, ``staging`` ...).
OWN_ALIASES = frozenset({ALIAS_PRODUCTION, ALIAS_PREVIOUS_PRODUCTION})
#: sources whose registry pipeline-plugin never writes to and which relay no other registry: every
#: alias or tag event from them was made by a person (a Databricks stage transition to Production, a
#: W&B ``production`` alias), so none is an echo
NEVER_ECHO_SOURCES = frozenset({"databricks", "wandb"})
#: every tag the write-back sets starts with this prefix (status, scoring_uri, run_url ...)
TAG_PREFIX = "pipeline_plugin."


def is_own_writeback(event: ModelVersionEvent) -> bool:
    """True when the event is the echo of an alias or tag that pipeline-plugin itself set."""
    if event.source in NEVER_ECHO_SOURCES:
        return False
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
# ``info`` is a :class:`WritebackInfo`. Sources without a write-back (every one in
# ``events.SOURCES`` not in ``WRITERS``) are skipped with a reason. SDKs are imported only inside the backend.

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


def status_tags(status: str, info: WritebackInfo, limit: int) -> dict[str, str]:
    """The tags that say what a version is now (``status``) and where it serves; values cut at the
    registry's ``limit``."""
    tags = {TAG_STATUS: status, TAG_UPDATED_AT: now_iso()}
    for key, value in ((TAG_SCORING_URI, info.scoring_uri), (TAG_RUN_URL, info.run_url), (TAG_IMAGE, info.image),
                       (TAG_REASON, info.reason)):
        if value:
            tags[key] = value
    return {k: v[:limit] for k, v in tags.items()}


class VersionTagWriter:
    """The write-back as tags on model versions, shared by the backends: production marks the new
    version ``production`` and the one it replaced ``previous-production``; a rollback marks the
    restored one ``production`` and the one it left ``rolled-back`` (with the reason); ``status``
    marks one version. A backend sets ``name``, ``limit`` (its longest tag value) and
    ``written_key``, and defines ``set_tags(info, model, version, tags)`` and ``target(info)``
    (what the result names: tracking URI, workspace, region)."""

    name = "?"
    limit = 4000
    written_key = "tags"

    def target(self, info: WritebackInfo) -> dict[str, Any]:
        return {}

    def set_tags(self, info: WritebackInfo, model: str, version: str, tags: dict[str, str]) -> dict[str, str]:
        raise NotImplementedError

    def _tag(self, info: WritebackInfo, model: str, version: str, tags: dict[str, str], written: dict) -> None:
        written[self.written_key][version] = self.set_tags(info, model, version, tags)

    def production(self, model: str, version: str, previous_version: str | None, info: WritebackInfo) -> dict[str, Any]:
        written = {**self.target(info), self.written_key: {}}
        self._tag(info, model, version, status_tags("production", info, self.limit), written)
        if previous_version and previous_version != version:
            self._tag(info, model, previous_version, {TAG_STATUS: "previous-production", TAG_UPDATED_AT: now_iso()},
                      written)
        return written

    def rollback(self, model: str, restored_version: str, from_version: str | None, before_restored: str | None,
                 info: WritebackInfo) -> dict[str, Any]:
        """Production went back from ``from_version`` to ``restored_version``; ``before_restored``
        is what production served before the restored version (the new previous-production)."""
        written = {**self.target(info), self.written_key: {}}
        self._tag(info, model, restored_version, status_tags("production", info, self.limit), written)
        if from_version and from_version != restored_version:
            gone = {TAG_STATUS: "rolled-back", TAG_UPDATED_AT: now_iso()}
            if info.reason:
                gone[TAG_REASON] = info.reason[:self.limit]
            self._tag(info, model, from_version, gone, written)
        return written

    def status(self, model: str, version: str, status: str, info: WritebackInfo) -> dict[str, Any]:
        written = {**self.target(info), self.written_key: {}}
        self._tag(info, model, version, status_tags(status, info, self.limit), written)
        return written


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
