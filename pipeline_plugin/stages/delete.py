"""The delete stage: stop and remove one environment of a service (Azure ML's ``service.delete()``).

``delete(service, env, ...)`` removes what serves the environment on its target (containers and the
nginx stable address, the process target's processes, the Kubernetes objects) and the store's record
of it, and records who deleted what in the history. Deleting what is already gone is not an error
(``status: absent``); production is removed only when the caller says so (``confirmed``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from ..errors import ConfigError
from ..history import History, Record, current_actor
from ..targets import get_target
from .promote import resolve_target, snapshot

#: environments removed only with ``--yes``: what users are served from
PROTECTED_ENVS = ("production",)


@dataclass
class DeleteResult:
    service: str
    env: str
    target: str
    status: str  # deleted, absent
    deleted: dict[str, Any] | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def delete(
    service: str,
    env: str,
    *,
    target: str | None = None,
    history: History | None = None,
    confirmed: bool = False,
    reason: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> DeleteResult:
    say = progress or (lambda _msg: None)
    history = history or History()
    if env in PROTECTED_ENVS and not confirmed:
        raise ConfigError(
            f"--env {env!r}: deleting {service}'s {env} stops what users are served; pass --yes to confirm "
            "(or delete another environment)"
        )
    target_name = resolve_target(service, env, history, target)
    tgt = get_target(target_name)
    current = tgt.get(service, env)
    say(f"deleting {service} {env} on {target_name}" + (f" (v{current.version}, {current.image_id})" if current else ""))
    tgt.delete(service, env)  # idempotent: nothing deployed is not an error
    was = snapshot(current)
    status = "deleted" if current is not None else "absent"
    why = reason or ("deleted" if current is not None else "nothing was deployed; nothing to delete")
    history.record(Record(
        service=service, env=env, action="delete", status="succeeded",
        model=current.model if current else None, version=current.version if current else None,
        image=current.image if current else None, image_id=current.image_id if current else None,
        target=target_name, cause=f"user:{current_actor()}", reason=why,
        details={"deleted": was} if was else {},
    ))
    return DeleteResult(service=service, env=env, target=target_name, status=status, deleted=was,
                        reason=why)
