"""The rollback stage: put an environment back on the previous (or a named) version's image.

The image comes from the deployment history (what the environment served before), the switch is
the target's zero-downtime ``update``, and the source registry's aliases move back.
"""

from __future__ import annotations

from typing import Callable

from ..errors import ConfigError, NotFoundError
from ..history import History, Record, current_actor
from ..targets import get_target
from .promote import (StageResult, _port_of, _write, model_origin, requires_key, resolve_target, smoke_args_of, snapshot,
                      spec_for)
from .smoke_test import smoke_test
from .. import writeback


def choose(history: History, service: str, env: str, current_image_id: str | None, to_version: str | None) -> tuple[Record, Record | None]:
    """The record to roll back to, and the one that served before it (the next previous)."""
    served = history.serving_history(service, env)
    # an image a rollback moved away from is not a candidate for "previous" (no ping-pong)
    abandoned = {r.details.get("from_image_id") for r in served if r.action == "rollback"}
    candidate = None
    for i, rec in enumerate(served):
        if not rec.image_id or rec.image_id == current_image_id:
            continue
        if to_version is not None:
            if rec.version == str(to_version):
                candidate = (i, rec)
                break
        elif rec.image_id not in abandoned:
            candidate = (i, rec)
            break
    if candidate is None:
        seen = sorted({f"v{r.version}" if r.version else (r.image_id or "?")[:19] for r in served})
        what = f"version {to_version}" if to_version is not None else "previous version"
        raise NotFoundError(
            f"{service} {env} has no {what} to roll back to (one that a rollback left is not chosen again); "
            f"its history has: {', '.join(seen) or 'nothing'}; name one with --to VERSION "
            f"(see `pipeline-plugin status --name {service}`)",
            service=service, env=env,
        )
    index, rec = candidate
    before = next((r for r in served[index + 1:] if r.image_id and r.image_id != rec.image_id), None)
    return rec, before


def rollback(
    service: str,
    *,
    env: str = "production",
    to_version: str | None = None,
    target: str | None = None,
    keys: tuple[str, ...] = (),
    history: History | None = None,
    run_id: str | None = None,
    cause: str | None = None,
    reason: str | None = None,
    write_back: bool = True,
    if_serving: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> StageResult:
    """Roll ``env`` back. With ``if_serving``, only when it serves that model version now: a CI
    pipeline's rollback job names the version it tried to promote, so a promotion that already
    rolled itself back (or never switched) is not rolled back a second time, to an older version."""
    say = progress or (lambda _m: None)
    history = history or History()
    target_name = resolve_target(service, env, history, target)
    tgt = get_target(target_name)
    current = tgt.get(service, env)
    current_id = current.image_id if current else None
    serving = None  # the model version the environment serves now
    if current is not None:
        serving = current.version or model_origin(service, current, history, target_name).get("version")
    if if_serving is not None:
        if serving is None or str(serving) != str(if_serving):
            what = f"v{serving}" if serving is not None else "nothing"
            why = f"{service} {env} serves {what}, not v{if_serving}: nothing to roll back"
            say(why)
            return StageResult(
                stage="rollback", service=service, env=env, status="unchanged", target=target_name,
                image_id=current_id, model=current.model if current else None,
                version=str(serving) if serving is not None else None,
                scoring_uri=current.scoring_uri if current else None, previous=snapshot(current), reason=why,
                run_id=run_id,
            )
    rec, before = choose(history, service, env, current_id, to_version)
    if current is not None and not keys and requires_key(current.scoring_uri):
        raise ConfigError(
            f"{service} {env} requires a scoring key and none was given; pass --key (or set "
            "PIPELINE_PLUGIN_SCORING_KEY) so that the restored version keeps requiring it"
        )
    cause = cause or f"user:{current_actor()}"
    from_version = serving
    say(f"rolling {service} {env} back to {rec.image_id}" + (f" (v{rec.version})" if rec.version else ""))
    if current is not None:
        spec = spec_for(current, env, rec.image_id, _port_of(current), keys, {})
        restored = tgt.update(spec, say)
    else:
        from ..targets import DeploymentSpec

        restored = tgt.create(DeploymentSpec(service=service, env=env, image=rec.image_id, keys=keys), say)
    why = reason or (f"rollback to v{to_version} requested" if to_version else "rollback to the previous version requested")
    history.record(
        Record(
            action="rollback", status="succeeded", service=service, env=env, target=target_name, image=rec.image,
            image_id=rec.image_id, model=rec.model, version=rec.version, scoring_uri=restored.scoring_uri,
            run_id=run_id, cause=cause, reason=why,
            details={"from_image_id": current_id, "from_version": from_version, "source": rec.details.get("source"),
                     "registry": rec.details.get("registry")},
        )
    )
    result = StageResult(
        stage="rollback", service=service, env=env, status="rolled-back", target=target_name, image_id=rec.image_id,
        model=rec.model, version=rec.version, scoring_uri=restored.scoring_uri, previous=snapshot(current),
        reason=why, run_id=run_id,
    )
    # the restored version answers as it did: its own recorded smoke test, repeated here
    passed = history.passed_smoke_test(service, env, rec.image_id) or (
        history.passed_smoke_test(service, "staging", rec.image_id) if env != "staging" else None)
    args = smoke_args_of(passed) if passed is not None else None
    if args and args["sample"] is not None:
        say(f"smoke-testing the restored version at {restored.scoring_uri}")
        report = smoke_test(restored.scoring_uri, key=keys[0] if keys else None, progress=say, **args)
        result.smoke = report
        history.record(Record(
            action="smoke-test", status="passed" if report.passed else "failed", service=service, env=env,
            target=target_name, image=rec.image, image_id=rec.image_id, model=rec.model, version=rec.version,
            scoring_uri=restored.scoring_uri, run_id=run_id, cause=cause, reason=report.reason(),
            details={**args, "report": report.to_dict()},
        ))
        if not report.passed:
            result.status = "failed"
            result.reason = (f"{why}; the restored version now fails its smoke test: {report.reason()} "
                             f"(it serves anyway; look at it, or roll back further with --to VERSION)")
    else:
        say(f"no recorded smoke test of {rec.image_id}: the restored version is not checked")
    origin = model_origin(service, restored, history, target_name)
    if write_back and env == "production" and origin["source"] and rec.model and rec.version:
        info = writeback.WritebackInfo(source=origin["source"], registry=origin["registry"],
                                       scoring_uri=restored.scoring_uri, image=rec.image_id, reason=why)
        base = dict(service=service, env=env, target=target_name, image=rec.image, image_id=rec.image_id,
                    model=rec.model, version=rec.version, run_id=run_id, cause=cause)
        result.writeback = _write(history, base, "rollback", info, say, model=rec.model, restored_version=rec.version,
                                  from_version=from_version, before_restored=before.version if before else None)
    say(f"{service} {env} serves {rec.model or ''} v{rec.version} again at {restored.scoring_uri}")
    return result
