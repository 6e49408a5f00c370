"""What the inbox keeps, whichever database holds it (``sqlite`` or ``postgres``): the ids of events
and runs, their statuses, the records handed to the worker and the commands (``Claimed``,
``Decision``, ``RunRecord``, ``StoredEvent``), and the names of lease owners (``host:pid:id``)."""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, TypeVar

from ..events import ModelVersionEvent
from .sqlite_put import event_id_for_key as _event_id_for_key

#: after this many failed attempts an event (or a run) is dead-lettered
MAX_ATTEMPTS = 5
#: a worker's claim on an event lasts this long unless renewed (dispatches renew it)
LEASE_SECONDS = 300.0
EVENT_STATUSES = ("pending", "matched", "unmatched", "ignored", "failed")
#: run statuses: recorded (not yet dispatched), dispatching (dispatch under way), then the
#: provider's answer (dispatched, succeeded, failed), or error (raised; retried), or unknown (the
#: process stopped mid-dispatch and the provider cannot be asked again safely)
RUN_STATUSES = ("recorded", "dispatching", "dispatched", "succeeded", "failed", "error", "unknown")


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_id_for(event: ModelVersionEvent) -> str:
    """Stable id of a change: the same change gets the same id in any state dir."""
    return _event_id_for_key(event.dedupe_key())


R = TypeVar("R")


def model_prefixes(rows: Iterable[tuple[Any, R | None]], claimable: Callable[[R], bool],
                   limit: int | None = None) -> list[R]:
    """Of ``rows`` ((model, row) pairs, oldest first; a row None when it may not be taken), each
    model's rows up to its first that is None or not ``claimable``: a model's later event never
    goes without the ones before it (both inboxes' claims). At most ``limit`` rows; ``rows`` is
    read only as far as that needs."""
    stopped: set[Any] = set()
    taken: list[R] = []
    for model, row in rows:
        if model in stopped:
            continue
        if row is None or not claimable(row):
            stopped.add(model)
            continue
        taken.append(row)
        if limit is not None and len(taken) >= limit:
            break
    return taken


def run_id_for(event_id: str, rule_name: str, generation: int = 0) -> str:
    """Stable run id from (event id, rule name[, replay generation]): the provider's idempotency key."""
    key = f"{event_id}|{rule_name}" + (f"|{generation}" if generation else "")
    return "run_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _version_number(version: str) -> tuple[int, ...] | None:
    parts = version.split(".")
    if all(p.isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return None


@dataclass
class Claimed:
    id: str
    event: ModelVersionEvent
    generation: int
    attempts: int
    owner: str
    status: str = "pending"  # what matching decided so far (a restart keeps the decision)


@dataclass
class Decision:
    """What matching decided for one claimed event: its outcome (``status``: ``matched``,
    ``unmatched``, ``ignored``; None keeps it) and one run per matched rule with a pipeline
    (``rule_name``, ``provider``, ``pipeline``, ``rules_dir``)."""

    event_id: str
    generation: int
    runs: list[Mapping[str, Any]] = field(default_factory=list)
    status: str | None = None
    reason: str = ""
    rules: list[str] | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in EVENT_STATUSES:
            raise ValueError(f"unknown event status {self.status!r}")


@dataclass
class RunRecord:
    run_id: str
    event_id: str
    rule_name: str
    generation: int
    provider: str
    pipeline: dict[str, Any]
    rules_dir: str | None
    status: str
    url: str | None
    external_id: str | None
    detail: str
    attempts: int
    created_at: str
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "rule": self.rule_name,
            "generation": self.generation,
            "provider": self.provider,
            "status": self.status,
            "url": self.url,
            "external_id": self.external_id,
            "detail": self.detail,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass
class StoredEvent:
    id: str
    event: ModelVersionEvent
    status: str
    reason: str
    rules: list[str]
    received_at: str
    processed_at: str | None
    done: bool
    generation: int
    attempts: int
    last_error: str | None
    runs: list[RunRecord] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        e = self.event
        return {
            "id": self.id,
            "source": e.source,
            "kind": e.kind,
            "model": e.model,
            "version": e.version,
            "status": self.status,
            "reason": self.reason,
            "rules": self.rules,
            "received_at": self.received_at,
            "delivery_id": e.delivery_id,
            "is_test": e.is_test,
        }

    def to_dict(self) -> dict[str, Any]:
        """The normalized event's fields at top level (so ``ModelVersionEvent.from_dict`` accepts
        it), plus id, status, reason, rules, runs and history."""
        data = self.event.to_dict()
        data.update(
            id=self.id,
            status=self.status,
            reason=self.reason,
            rules=self.rules,
            received_at=self.received_at,
            processed_at=self.processed_at,
            attempts=self.attempts,
            last_error=self.last_error,
            runs=[r.to_dict() for r in self.runs],
            history=self.history,
        )
        return data


def _owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_dead(owner: str | None) -> bool:
    """True when ``owner`` names a process on this host that no longer runs (or an earlier
    incarnation inside this very process)."""
    if not owner:
        return True
    try:
        host, pid_text, _ = owner.split(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    if pid == os.getpid():
        return owner not in _LIVE_OWNERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


_LIVE_OWNERS: set[str] = set()


def _safe_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Delivery metadata worth keeping; never headers that may carry secrets."""
    keep = ("remote", "user_agent", "content_type", "scheme")
    return {k: meta[k] for k in keep if k in meta and meta[k] is not None}
