"""CI providers: start a pipeline for one (rule, event) pair.

One module per backend (``local``, ``github``, ``gitlab``, ``azure_devops``), each defining
``PROVIDER``, an object with ``name`` and ``dispatch(run) -> DispatchResult``. SDKs are imported
only inside their backend module. ``dispatch`` must be safe to call again for the same
``run.run_id`` (the worker retries after a crash): backends that cannot ask the service whether the
run exists rely on the worker's record of the dispatch.

The worker's rule (``worker.py``): a provider with ``idempotent = True`` is dispatched again when a
crash interrupted its dispatch or ``dispatch`` raised (with backoff, then dead-lettered); for any
other provider such a run is recorded ``unknown`` (crash) or ``failed`` (raised), never started twice.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

from ..errors import ConfigError, suggest
from ..events import ModelVersionEvent

BACKENDS: dict[str, str] = {
    "local": "local",
    "github": "github",
    "gitlab": "gitlab",
    "azure-devops": "azure_devops",
}

#: other names of the same backend: Azure DevOps runs Azure Pipelines, and users say either
ALIASES: dict[str, str] = {"azure-pipelines": "azure-devops"}


def canonical(name: str) -> str:
    """The backend name for ``name`` (``azure-pipelines`` -> ``azure-devops``; others unchanged)."""
    return ALIASES.get(name, name)


@dataclass
class PipelineRun:
    run_id: str  # stable: derived from (event id, rule name); used as idempotency key
    rule_name: str
    pipeline: Mapping[str, Any]  # the rule's `pipeline:` section (provider, target keys, stage settings)
    event: ModelVersionEvent
    state_dir: Path | None = None
    rules_dir: Path | None = None  # where the rule file lives: relative paths in `pipeline` resolve here
    #: folders below which local paths from events may be fetched (the listener's ``fetch.allowed_roots``)
    allowed_roots: tuple[str, ...] = ()


@dataclass
class DispatchResult:
    provider: str
    status: str  # "dispatched" (runs elsewhere), "succeeded" or "failed" (ran in-process)
    url: str | None = None
    external_id: str | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "status": self.status,
            "url": self.url,
            "external_id": self.external_id,
            "detail": self.detail,
            **({"data": self.data} if self.data else {}),
        }


def extra_values(values: Mapping[str, Any]) -> dict[str, str]:
    """A rule's extra inputs, variables or parameters as the text CI systems take: booleans as
    ``true``/``false`` (what a GitHub ``type: boolean`` input and Azure's ``boolean`` parameter
    expect; Python's ``True`` is rejected), numbers and strings as written."""
    return {str(k): ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in values.items()}


class Provider(Protocol):
    name: str

    def dispatch(self, run: PipelineRun) -> DispatchResult: ...


def get_provider(name: str) -> Provider:
    name = canonical(name)
    if name not in BACKENDS:
        raise ConfigError(f"no CI provider {name!r}.{suggest(name, BACKENDS)} Installed: {', '.join(BACKENDS)}")
    module = importlib.import_module(f"{__name__}.{BACKENDS[name]}")
    return module.PROVIDER
