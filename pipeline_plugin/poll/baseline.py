"""The first poll of a registry is a baseline: what the registry holds already starts no pipeline.

Turning polling on for a registry with 200 old versions must not start 200 deployments, and an
MLflow alias or an OCI tag carries no date that ``since`` could filter. So the first successful
poll of a (source, registry) -- one that has no row in the poll state -- stores every listed
version the inbox does not hold yet as an event that is already decided: status ``ignored``,
reason ``existed before polling started at <T>; ...``, no work left. Being stored, the same
version announced again (a later poll, the registry's webhook, another replica) is a duplicate
and starts nothing either; ``pipeline-plugin events replay <id>`` deploys one on purpose.

The poll state (``inbox.poll_state``; one row per ``(source, registry)``: when it was first
polled, how many versions the baseline recorded, whether ``since`` was set instead, and the models
the poller covers) lives next to the inbox: the table ``poll_state`` of the SQLite inbox (created
when first needed, as the leases table), or ``inbox_poll_state`` in PostgreSQL (migrations 0003 and
0004). A row is written after the first poll that succeeds, so every later poll -- after a
restart, on another replica, however long the poller was down -- announces what is new since as
usual. A model the poller did not cover before (added to its ``models`` or ``repositories`` list,
or every model not listed before when the list becomes ``all``) gets a baseline of its own, taken
by the poll that first lists it: adding a model with 40 versions to the list must not start 40
deployments. A registry is keyed by ``Poller.identity()`` (e.g. an Azure ML workspace's ARM path,
not only its name).

An explicit ``since`` replaces the baseline: versions dated at or after it are announced (and
undated ones, as before), earlier ones skipped.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..events import ModelVersionEvent
from ..inbox.poll_state import covered, state_for

__all__ = ["BATCH", "covered", "reason", "record_baseline", "state_for"]

#: events stored per transaction while recording a baseline
BATCH = 200


def reason(at: str) -> str:
    return (f"existed before polling started at {at}; set since: to deploy older versions "
            "(or `pipeline-plugin events replay <id>` for one)")


def record_baseline(state: Any, delivery_source: str, events: Iterable[ModelVersionEvent], at: str,
                    meta: dict[str, Any]) -> int:
    """Store ``events`` as ignored, ``BATCH`` per transaction; how many the inbox did not hold."""
    why = reason(at)
    events = list(events)
    return sum(state.record(delivery_source, events[i:i + BATCH], why, at, meta) for i in range(0, len(events), BATCH))
