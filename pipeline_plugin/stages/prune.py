"""The prune stage: remove local images this tool built that nothing needs any more.

An image is this tool's when it carries the ``io.pipeline-plugin.model.name`` label
(``builders.docker.image_labels``). It belongs to a service when the history (``store.history``)
names its id in a record of that service; an image no record names belongs to the service of its
model name label. Per service, an image is **kept** when:

- ``serves``: it is what an environment of the service serves (``History.serving``);
- ``rollback``: it is what ``pipeline-plugin rollback`` of an environment would go back to
  (``stages.rollback.choose``: the previous version, skipping images a rollback left);
- ``pending approval``: a promotion waiting for ``pipeline-plugin approve`` names it;
- ``container``: a container (running or stopped) was created from it;
- ``recent``: it is among the newest ``keep`` images of the service (by build time).

Every other image is removed, tag by tag (``images.remove`` without ``force``: Docker itself refuses
an image a container uses, and such a refusal is reported as kept, never forced). Only the local
Docker Engine is touched; images pushed to a registry stay there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError, NotFoundError
from ..history import History

MODEL_LABEL = "io.pipeline-plugin.model."
DEFAULT_KEEP = 3


@dataclass
class ImageVerdict:
    image_id: str
    tags: list[str]
    service: str
    model: str
    version: str
    created: str
    reasons: list[str] = field(default_factory=list)  # why kept; empty for a removed image
    error: str | None = None  # Docker refused to remove it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PruneResult:
    keep: int
    dry_run: bool
    removed: list[ImageVerdict]
    kept: list[ImageVerdict]
    service: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service, "keep": self.keep, "dry_run": self.dry_run,
            "removed": [v.to_dict() for v in self.removed], "kept": [v.to_dict() for v in self.kept],
        }


def _needed(history: History, services: Iterable[str]) -> dict[str, list[str]]:
    """image id -> the reasons the store needs it (serves / rollback target), over ``services``."""
    from .rollback import choose

    needed: dict[str, list[str]] = {}
    for service in services:
        for env in history.environments(service):
            serving = history.serving(service, env)
            current = serving.image_id if serving else None
            if current:
                needed.setdefault(current, []).append(f"serves {service} {env} (v{serving.version})")
            if serving is None:
                continue  # a deleted environment has nothing to roll back
            try:
                back, _ = choose(history, service, env, current, None)
            except NotFoundError:
                continue
            if back.image_id:
                needed.setdefault(back.image_id, []).append(f"rollback target of {service} {env} (v{back.version})")
    for approval in history.approvals(status="pending"):
        for image_id in _image_ids(approval.request):
            needed.setdefault(image_id, []).append(f"pending approval {approval.run_id} of {approval.service}")
    return needed


def _image_ids(value: Any) -> set[str]:
    text = json.dumps(value, default=str)
    found: set[str] = set()
    start = text.find("sha256:")
    while start != -1:
        end = start + len("sha256:")
        while end < len(text) and text[end] in "0123456789abcdef":
            end += 1
        if end - start == len("sha256:") + 64:
            found.add(text[start:end])
        start = text.find("sha256:", end)
    return found


def _owners(history: History) -> dict[str, str]:
    """image id -> the service whose history names it (the newest record wins)."""
    owners: dict[str, str] = {}
    for rec in reversed(history.records()):  # oldest first: newer records overwrite
        if rec.image_id:
            owners[rec.image_id] = rec.service
    return owners


def prune(
    *,
    service: str | None = None,
    keep: int = DEFAULT_KEEP,
    dry_run: bool = False,
    history: History | None = None,
    client: Any = None,
    progress: Callable[[str], None] | None = None,
) -> PruneResult:
    say = progress or (lambda _msg: None)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise ConfigError(f"--keep {keep!r}: give how many of the newest images per service to keep, 0 or more", field="--keep")
    history = history or History()
    if client is None:
        from ..builders.docker import docker_client

        client = docker_client(timeout=120)

    say("listing images built by pipeline-plugin")
    images = client.images.list(filters={"label": MODEL_LABEL + "name"})
    owners = _owners(history)
    services = set(history.services())
    needed = _needed(history, services)
    in_use: dict[str, list[str]] = {}
    for container in client.containers.list(all=True, ignore_removed=True):
        image_id = container.attrs.get("Image") if isinstance(container.attrs, dict) else None
        if image_id:
            in_use.setdefault(image_id, []).append(container.name)

    verdicts: list[ImageVerdict] = []
    for image in images:
        labels = image.labels or {}
        owner = owners.get(image.id) or labels.get(MODEL_LABEL + "name", "")
        if service is not None and owner != service:
            continue
        reasons = list(needed.get(image.id, []))
        if image.id in in_use:
            reasons.append("used by container " + ", ".join(sorted(in_use[image.id])))
        verdicts.append(ImageVerdict(
            image_id=image.id, tags=sorted(image.tags), service=owner,
            model=labels.get(MODEL_LABEL + "name", ""), version=labels.get(MODEL_LABEL + "version", ""),
            created=str(image.attrs.get("Created", "")), reasons=reasons,
        ))

    by_service: dict[str, list[ImageVerdict]] = {}
    for v in verdicts:
        by_service.setdefault(v.service, []).append(v)
    for group in by_service.values():
        group.sort(key=lambda v: _created(v.created), reverse=True)
        for rank, v in enumerate(group[:keep], start=1):
            v.reasons.append(f"recent (#{rank} of the newest {keep})")

    removed: list[ImageVerdict] = []
    kept: list[ImageVerdict] = []
    for v in sorted(verdicts, key=lambda v: (v.service, _created(v.created)), reverse=True):
        if v.reasons:
            kept.append(v)
            continue
        if not dry_run:
            say(f"removing {', '.join(v.tags) or v.image_id[:19]} ({v.service} v{v.version})")
            v.error = _remove(client, v)
            if v.error:
                v.reasons.append(f"Docker refused to remove it: {v.error}")
                kept.append(v)
                continue
        removed.append(v)
    return PruneResult(keep=keep, dry_run=dry_run, removed=removed, kept=kept, service=service)


def _created(text: str) -> tuple[str, int]:
    """Docker's ``Created`` (RFC 3339 with up to 9 fraction digits, trailing zeros dropped) as a
    sortable key: (seconds part, nanoseconds)."""
    head, _, rest = text.partition(".")
    digits = "".join(ch for ch in rest if ch.isdigit())
    return head.rstrip("Z"), int((digits + "000000000")[:9]) if digits else 0


def _remove(client: Any, v: ImageVerdict) -> str | None:
    """Remove every tag of the image, then the image; the Docker error text on a refusal."""
    import docker

    try:
        for tag in v.tags:
            client.images.remove(tag, noprune=False)
        try:
            client.images.remove(v.image_id, noprune=False)
        except docker.errors.ImageNotFound:
            pass  # the last tag's removal deleted it
    except docker.errors.APIError as exc:
        return str(getattr(exc, "explanation", None) or exc)
    return None
