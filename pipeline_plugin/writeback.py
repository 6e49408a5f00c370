"""Names used when pipeline-plugin writes deployment state back to the source registry.

The listener must never start a pipeline from an event that its own write-back caused, so the
names live here, shared by the writer (stages) and the reader (worker).
"""

from __future__ import annotations

from .events import ModelVersionEvent

ALIAS_PRODUCTION = "production"
ALIAS_PREVIOUS_PRODUCTION = "previous-production"
ALIAS_STAGING = "staging"
OWN_ALIASES = frozenset({ALIAS_PRODUCTION, ALIAS_PREVIOUS_PRODUCTION, ALIAS_STAGING})
#: every tag the write-back sets starts with this prefix (status, scoring_uri, run_url ...)
TAG_PREFIX = "pipeline_plugin."


def is_own_writeback(event: ModelVersionEvent) -> bool:
    """True when the event is the echo of an alias or tag that pipeline-plugin itself set."""
    if event.kind in ("alias.set", "alias.deleted"):
        return event.alias in OWN_ALIASES
    if event.kind in ("tag.set", "tag.deleted"):
        return bool(event.tags) and all(key.startswith(TAG_PREFIX) for key in event.tags)
    return False
