"""The promote stage: move the exact image that passed staging into production, check it there,
and roll back automatically when production's check fails.

``promote(service, ...)`` refuses an image with no passing staging smoke test in the history,
honours an approval gate (the request waits in the state dir until ``pipeline-plugin approve RUN``),
switches production through the target's zero-downtime ``update``, smoke-tests production with the
sample and expected output that passed staging, and then either writes the new state back to the
source registry or restores the previous production image and reports why.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import writeback
from ..errors import ConfigError, NotFoundError, ServiceError, StageFailed
from ..history import History, Record, current_actor
from ..targets import Deployment, DeploymentSpec, get_target
from .smoke_test import DEFAULT_REQUESTS, DEFAULT_TOLERANCE, SmokeReport, smoke_test

STRATEGIES = ("blue-green", "canary")
#: every deployment the stages make tells the model which environment it serves
ENV_VAR = "PIPELINE_PLUGIN_ENV"
#: targets that can split traffic by weight (``start_canary``/``weigh_canary``/``end_canary``)
CANARY_TARGETS: frozenset[str] = frozenset({"docker"})
#: share of the stable address's requests the canary gets, and how long it is watched there
DEFAULT_CANARY_WEIGHT = 10
DEFAULT_CANARY_SECONDS = 10.0


@dataclass
class StageResult:
    """What promote and rollback return; ``status`` is promoted, unchanged, pending-approval,
    rolled-back or failed (or, for rollback, rolled-back)."""

    stage: str
    service: str
    env: str
    status: str
    target: str
    image_id: str | None = None
    model: str | None = None
    version: str | None = None
    scoring_uri: str | None = None
    previous: dict[str, Any] | None = None
    reason: str = ""
    run_id: str | None = None
    smoke: SmokeReport | None = None
    writeback: dict[str, Any] = field(default_factory=dict)
    #: where the staging pass promote trusted came from when the history had none (a deployment's annotations)
    staging_evidence: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "service": self.service,
            "env": self.env,
            "status": self.status,
            "target": self.target,
            "image_id": self.image_id,
            "model": self.model,
            "version": self.version,
            "scoring_uri": self.scoring_uri,
            "previous": self.previous,
            "reason": self.reason,
            "run_id": self.run_id,
            "smoke_test": self.smoke.to_dict() if self.smoke else None,
            "writeback": self.writeback,
            "staging_evidence": self.staging_evidence,
        }


# ---- shared helpers (also used by rollback, status and the smoke-test command) --------------
def docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return False


def resolve_target(service: str, env: str | None, history: History, explicit: str | None = None) -> str:
    """The target a service's environment runs on: the flag, else the one its history names,
    else ``docker`` when a Docker Engine answers, else ``process``."""
    if explicit:
        get_target(explicit)  # ConfigError with a suggestion for a bad name
        return explicit
    for rec in history.records(service=service, env=env, limit=50):
        if rec.target:
            return rec.target
    return "docker" if docker_answers() else "process"


def snapshot(dep: Deployment | None) -> dict[str, Any] | None:
    if dep is None:
        return None
    return {
        "image": dep.image,
        "image_id": dep.image_id,
        "model": dep.model,
        "version": dep.version,
        "scoring_uri": dep.scoring_uri,
    }


def image_labels(dep: Deployment, target_name: str) -> dict[str, str]:
    """The model image's labels: from the deployment's details, else Docker's image record."""
    labels: dict[str, str] = {}
    if target_name == "docker":
        try:
            import docker

            client = docker.from_env(timeout=10)
            try:
                labels.update(client.images.get(dep.image_id or dep.image).labels or {})
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - labels are an optional hint
            pass
    elif target_name == "process":
        try:
            labels.update(get_target("process").resolve(dep.image_id)[0].labels)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - labels are an optional hint
            pass
    labels.update((dep.details or {}).get("labels") or {})
    return labels


def model_origin(service: str, dep: Deployment, history: History, target_name: str) -> dict[str, Any]:
    """Which registry a deployment's model version came from: ``model``, ``version``, ``source``,
    ``registry`` (dict), ``run_url``, from the history of that image, else the image labels."""
    origin: dict[str, Any] = {"model": dep.model, "version": dep.version, "source": None, "registry": {}, "run_url": None}
    for rec in history.records(service=service, image_id=dep.image_id, limit=50):
        d = rec.details or {}
        if d.get("source") and not origin["source"]:
            origin["source"] = d["source"]
            origin["registry"] = writeback.parse_registry(d.get("registry"))
        origin["model"] = origin["model"] or rec.model
        origin["version"] = origin["version"] or rec.version
        origin["run_url"] = origin["run_url"] or d.get("run_url")
    if not origin["source"] or not origin["model"]:
        labels = image_labels(dep, target_name)
        origin["model"] = origin["model"] or labels.get("io.pipeline-plugin.model.name")
        origin["version"] = origin["version"] or labels.get("io.pipeline-plugin.model.version")
        origin["source"] = origin["source"] or labels.get("io.pipeline-plugin.model.source")
        origin["registry"] = origin["registry"] or writeback.parse_registry(labels.get("io.pipeline-plugin.model.registry"))
    return origin


def spec_for(dep: Deployment, env: str, image: str, port: int | None, keys: tuple[str, ...], labels: dict[str, str],
             environment: dict[str, str] | None = None) -> DeploymentSpec:
    """The spec that runs ``image`` in ``env`` with the resources and settings ``dep`` ran with
    (plus ``environment``)."""
    details = dep.details or {}
    return DeploymentSpec(
        service=dep.service,
        env=env,
        image=image,
        port=port,
        cpu_cores=details.get("cpu_cores"),
        memory_gb=details.get("memory_gb"),
        environment={**dict(details.get("environment") or {}), **(environment or {}), ENV_VAR: env},
        keys=keys,
        labels=labels,
        replicas=max(1, int(details.get("replicas") or 1)),
        autoscaler=tuple(details["autoscaler"]) if details.get("autoscaler") else None,
    )


def smoke_args_of(passed: Record) -> dict[str, Any]:
    """``smoke_test`` arguments that repeat a recorded passing smoke test (the smoke-test command's
    record, or promote's own production check)."""
    d = passed.details or {}
    return {
        "sample": d.get("sample"),
        "expect": d.get("expect"),
        "has_expect": d.get("has_expect", "expect" in d),
        "tolerance": d.get("tolerance", DEFAULT_TOLERANCE),
        "requests_count": d.get("requests", d.get("requests_count", DEFAULT_REQUESTS)),
        "p99_ms": d.get("p99_ms"),
    }


def evidence_on_deployment(dep: Deployment, service: str, env: str, target_name: str,
                           say: Callable[[str], None]) -> Record | None:
    """A passing smoke test the deployment itself carries (the kubernetes target's annotations),
    as a history record, when the history has none: a promote job with an empty state dir and no
    shared database trusts it, but only for the image the deployment runs now."""
    evidence = (dep.details or {}).get("smoke_test")
    if not evidence:
        return None
    where = f"{dep.details.get('namespace')}/{dep.details.get('name')}" if dep.details.get("name") else f"{service}-{env}"
    if evidence["image"] != dep.image_id:
        raise StageFailed(
            f"refusing to promote {service}: the smoke-test annotation on {target_name} deployment {where} "
            f"(pipeline-plugin.io/smoke-test-image) names {evidence['image']}, but it now runs {dep.image_id}: the image "
            f"changed after its smoke test passed. Run `pipeline-plugin smoke-test --name {service} --env {env} "
            f"--target {target_name} --url {dep.scoring_uri} --sample FILE` again",
            service=service, image_id=dep.image_id, annotated_image=evidence["image"],
        )
    check = dict(evidence.get("check") or {})
    say(f"no smoke-test record of {dep.image_id} in the history; using the pass recorded on {where} "
        f"at {evidence.get('passed_at')} (report sha256 {evidence.get('report_sha256')})")
    details: dict[str, Any] = {k: check[k] for k in ("sample", "tolerance", "requests", "p99_ms", "has_expect", "expect")
                               if k in check and check[k] is not None}
    details["has_expect"] = bool(check.get("has_expect"))
    details.update(evidence={"on": f"{target_name} deployment {where}", "report_sha256": evidence.get("report_sha256"),
                             "passed_at": evidence.get("passed_at")},
                   sample_sha256=evidence.get("sample_sha256"), expect_sha256=evidence.get("expect_sha256"))
    return Record(service=service, env=env, action="smoke-test", status="passed", image=dep.image, image_id=dep.image_id,
                  scoring_uri=dep.scoring_uri, target=target_name, reason="", details=details,
                  time=evidence.get("passed_at") or "")


def requires_key(scoring_uri: str) -> bool:
    """True when the service answers 401 to a request without a scoring key."""
    import requests

    try:
        return requests.post(scoring_uri, json={"data": None}, timeout=10).status_code == 401
    except requests.RequestException:
        return False


def _port_of(dep: Deployment | None) -> int | None:
    if dep is None:
        return None
    from urllib.parse import urlsplit

    try:
        return urlsplit(dep.scoring_uri).port
    except ValueError:
        return None


# ---- the stage ------------------------------------------------------------------------------
def promote(
    service: str,
    *,
    from_env: str = "staging",
    to_env: str = "production",
    target: str | None = None,
    port: int | None = None,
    strategy: str = "blue-green",
    keys: tuple[str, ...] = (),
    history: History | None = None,
    run_id: str | None = None,
    cause: str | None = None,
    require_approval: bool = False,
    approved_by: str | None = None,
    run_url: str | None = None,
    smoke_overrides: dict[str, Any] | None = None,
    write_back: bool = True,
    environment: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    canary_weight: int = DEFAULT_CANARY_WEIGHT,
    canary_seconds: float = DEFAULT_CANARY_SECONDS,
    approved_image_id: str | None = None,
) -> StageResult:
    """Promote ``service`` from ``from_env`` to ``to_env``. Returns a :class:`StageResult`
    (``promoted``, ``unchanged``, ``pending-approval`` or ``rolled-back``); raises
    ``NotFoundError``/``StageFailed`` when there is nothing promotable."""
    say = progress or (lambda _m: None)
    history = history or History()
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {strategy!r} is not a promotion strategy; valid: {', '.join(STRATEGIES)}")
    if from_env == to_env:
        raise ConfigError(f"--from and --to are both {from_env!r}; promote moves a version between two environments")
    if strategy == "canary":
        if isinstance(canary_weight, bool) or not isinstance(canary_weight, int) or not 1 <= canary_weight <= 99:
            raise ConfigError(f"--canary-weight must be a whole percent from 1 to 99, got {canary_weight!r}")
        if canary_seconds < 0:
            raise ConfigError(f"--canary-seconds must be >= 0, got {canary_seconds!r}")
    target_name = resolve_target(service, from_env, history, target)
    if strategy == "canary" and target_name not in CANARY_TARGETS:
        raise ConfigError(
            f"--strategy canary is not supported yet by target {target_name!r}; use --strategy blue-green "
            "(the default: production switches at once with zero failed requests)"
        )
    tgt = get_target(target_name)
    run_id = run_id or f"promote-{service}-{uuid.uuid4().hex[:8]}"
    cause = cause or f"user:{current_actor()}"

    source_dep = tgt.get(service, from_env)
    if source_dep is None:
        raise NotFoundError(
            f"service {service!r} has no {from_env} deployment on target {target_name!r}; deploy it first "
            f"(pipeline-plugin deploy --name {service} --env {from_env} ...)",
            service=service, env=from_env,
        )
    if approved_image_id is not None and source_dep.image_id != approved_image_id:
        raise StageFailed(
            f"refusing to promote {service}: the approval was for {approved_image_id}, but {from_env} now serves "
            f"{source_dep.image_id}; nothing was promoted. Promote again to ask for approval of what {from_env} "
            "serves now",
            service=service, image_id=source_dep.image_id, approved_image_id=approved_image_id,
        )
    passed = history.passed_smoke_test(service, from_env, source_dep.image_id)
    if passed is None:
        passed = evidence_on_deployment(source_dep, service, from_env, target_name, say)
    if passed is None:
        raise StageFailed(
            f"refusing to promote {service}: the image {source_dep.image_id} running in {from_env} has no passing "
            f"smoke test; run `pipeline-plugin smoke-test --name {service} --env {from_env} --url {source_dep.scoring_uri} "
            "--sample FILE` first",
            service=service, image_id=source_dep.image_id,
        )
    origin = model_origin(service, source_dep, history, target_name)
    base = dict(
        service=service, env=to_env, target=target_name, image=source_dep.image, image_id=source_dep.image_id,
        model=origin["model"], version=origin["version"], run_id=run_id, cause=cause,
    )
    result = StageResult(
        stage="promote", service=service, env=to_env, status="promoted", target=target_name,
        image_id=source_dep.image_id, model=origin["model"], version=origin["version"], run_id=run_id,
        staging_evidence=(passed.details or {}).get("evidence"),
    )

    # -- approval gate
    if require_approval and not approved_by:
        request = {
            "service": service, "from_env": from_env, "to_env": to_env, "target": target_name, "port": port,
            "strategy": strategy, "image_id": source_dep.image_id, "cause": cause, "run_url": run_url,
            "smoke_overrides": smoke_overrides or {}, "write_back": write_back, "environment": environment or {},
        }
        approval = history.request_approval(run_id, service, request)
        if approval.status == "pending":
            history.record(Record(action="approval", status="pending", reason="promotion held until approved", **base))
            result.status = "pending-approval"
            result.reason = f"promotion of {service} to {to_env} waits for approval: pipeline-plugin approve {run_id}"
            say(result.reason)
            return result
        if approval.status != "approved":
            raise StageFailed(f"promotion run {run_id} was {approval.status}; nothing promoted", run_id=run_id)
        approved_by = approval.decided_by or "unknown"

    previous = tgt.get(service, to_env)
    result.previous = snapshot(previous)
    if previous is not None and not keys and requires_key(previous.scoring_uri):
        raise ConfigError(
            f"{service} {to_env} requires a scoring key and none was given; pass --key (or set "
            "PIPELINE_PLUGIN_SCORING_KEY) so that the promoted version keeps requiring it"
        )
    if previous is None and not keys and requires_key(source_dep.scoring_uri):
        raise ConfigError(
            f"{service} {from_env} requires a scoring key and none was given; pass --key (or set "
            f"PIPELINE_PLUGIN_SCORING_KEY) so that {to_env} is not left open to anyone"
        )
    smoke_args = smoke_args_of(passed)
    smoke_args.update(smoke_overrides or {})
    no_expect = smoke_args.get("has_expect") and smoke_args.get("expect") is None
    if (smoke_args["sample"] is None or no_expect) and (passed.details or {}).get("sample_sha256"):
        d = passed.details
        raise StageFailed(
            f"the smoke test that passed {from_env} (recorded on the {target_name} deployment) carries only the digests "
            f"of its check (too large to travel inline): pass the same files with --sample (sha256 {d['sample_sha256']})"
            + (f" and --expect (sha256 {d.get('expect_sha256')})" if smoke_args.get("has_expect") else ""),
            service=service,
        )
    if smoke_args["sample"] is None:
        raise StageFailed(
            f"the passing {from_env} smoke test of {service} recorded no sample; run the smoke test again with --name",
            service=service,
        )
    reason_prefix = f"approved by {approved_by}; " if approved_by else ""

    # -- switch
    if previous is not None and previous.image_id == source_dep.image_id:
        say(f"{to_env} already serves {source_dep.image_id}; checking it")
        result.status = "unchanged"
        switched = previous
    else:
        labels = {"io.pipeline-plugin.run-id": run_id}
        spec = spec_for(source_dep, to_env, source_dep.image_id or source_dep.image, port or _port_of(previous), keys, labels,
                        environment)
        if strategy == "canary" and previous is not None:
            failed = _canary(tgt, spec, previous, smoke_args, keys, canary_weight, canary_seconds, history, base, say)
            if failed:
                result.status = "rolled-back"
                result.scoring_uri = previous.scoring_uri
                result.reason = (f"canary of {source_dep.image_id} failed: {failed}; removed it, {to_env} still serves "
                                 f"{previous.image_id}" + (f" (v{previous.version})" if previous.version else ""))
                history.record(Record(action="promote", status="failed", reason=result.reason,
                                      scoring_uri=previous.scoring_uri, details={"strategy": "canary"}, **base))
                if write_back and origin["source"] and origin["model"] and origin["version"]:
                    info = writeback.WritebackInfo(source=origin["source"], registry=origin["registry"],
                                                   scoring_uri=previous.scoring_uri, run_url=run_url or origin.get("run_url"),
                                                   image=source_dep.image_id, reason=result.reason)
                    result.writeback = _write(history, base, "status", info, say, model=origin["model"],
                                              version=origin["version"], status=f"failed-{to_env}")
                say(result.reason)
                return result
        say(f"switching {service} {to_env} to {source_dep.image_id} ({origin['model']} v{origin['version']}) on {target_name}")
        try:
            switched = tgt.update(spec, say) if previous is not None else tgt.create(spec, say)
        except Exception as exc:  # noqa: BLE001 - any failure to switch is recorded, production untouched
            msg = f"switching {to_env} failed: {getattr(exc, 'message', exc)}"
            if strategy == "canary" and previous is not None:
                tgt.end_canary(service, to_env, say)  # the canary passed, but must not outlive the failed switch
            history.record(Record(action="promote", status="failed", reason=msg, **base))
            raise ServiceError(msg, service=service) from exc
    result.scoring_uri = switched.scoring_uri

    # -- production check
    say(f"smoke-testing {to_env} at {switched.scoring_uri}")
    report = smoke_test(switched.scoring_uri, key=keys[0] if keys else None, progress=say, **smoke_args)
    result.smoke = report
    history.record(
        Record(
            action="smoke-test", status="passed" if report.passed else "failed", scoring_uri=switched.scoring_uri,
            reason=report.reason(), details={**smoke_args, "report": report.to_dict()}, **base,
        )
    )
    info = writeback.WritebackInfo(
        source=origin["source"] or "", registry=origin["registry"], scoring_uri=switched.scoring_uri,
        run_url=run_url or origin.get("run_url"), image=source_dep.image_id,
    )
    if report.passed:
        history.record(
            Record(
                action="promote", status="succeeded", scoring_uri=switched.scoring_uri,
                reason=reason_prefix + f"passed {from_env} and {to_env} checks",
                details={"from_env": from_env, "previous": result.previous, "source": origin["source"],
                         "registry": origin["registry"], "run_url": info.run_url, "approved_by": approved_by},
                **base,
            )
        )
        if require_approval:
            history.decide(run_id, "done", approved_by or "unknown")
        say(f"{service} {to_env} now serves {origin['model']} v{origin['version']} at {switched.scoring_uri}")
        if write_back and origin["source"] and origin["model"] and origin["version"] and result.status == "promoted":
            prev_version = previous.version if previous is not None else None
            if previous is not None and prev_version is None:
                prev_version = model_origin(service, previous, history, target_name).get("version")
            result.writeback = _write(history, base, "production", info, say, model=origin["model"],
                                      version=origin["version"], previous_version=prev_version)
        return result

    # -- automatic rollback
    why = report.reason()
    say(f"{to_env} check failed ({why}); rolling back")
    result.status = "rolled-back"
    if previous is None:
        tgt.delete(service, to_env)
        result.reason = f"{to_env} check failed after the switch: {why}; {to_env} had no previous version, so it was removed"
        restored = None
    elif previous.image_id == source_dep.image_id:
        result.status = "failed"
        result.reason = f"{to_env} already served this image and its check fails: {why}"
        history.record(Record(action="promote", status="failed", reason=result.reason, **base))
        return result
    else:
        spec = spec_for(previous, to_env, previous.image_id or previous.image, port or _port_of(previous), keys,
                        {"io.pipeline-plugin.run-id": run_id}, environment)
        restored = tgt.update(spec, say)
        result.reason = (
            f"{to_env} check failed after the switch: {why}; rolled back to the previous image {previous.image_id}"
            + (f" (v{previous.version})" if previous.version else "")
        )
    history.record(Record(action="promote", status="failed", reason=result.reason, scoring_uri=switched.scoring_uri, **base))
    if restored is not None:
        prev_origin = model_origin(service, previous, history, target_name)
        history.record(
            Record(
                action="rollback", status="succeeded", service=service, env=to_env, target=target_name,
                image=previous.image, image_id=previous.image_id, model=prev_origin["model"],
                version=prev_origin["version"], scoring_uri=restored.scoring_uri, run_id=run_id, cause="automatic",
                reason=f"automatic: {to_env} check of {source_dep.image_id} failed: {why}",
                details={"from_image_id": source_dep.image_id, "from_version": origin["version"]},
            )
        )
    if write_back and origin["source"] and origin["model"] and origin["version"]:
        info.reason = result.reason
        result.writeback = _write(history, base, "status", info, say, model=origin["model"], version=origin["version"],
                                  status=f"failed-{to_env}")
    say(result.reason)
    return result


def _canary(tgt: Any, spec: DeploymentSpec, previous: Deployment, smoke_args: dict[str, Any], keys: tuple[str, ...],
            weight: int, seconds: float, history: History, base: dict[str, Any], say: Callable[[str], None]) -> str:
    """Run ``spec`` as a canary next to ``previous``: the production check against the canary
    directly, then ``weight`` percent of the stable address and ``seconds`` of watching both. Returns why it
    failed (the canary is removed then, production untouched), or "" when it passed (the canary
    still runs; the normal update replaces both)."""
    say(f"canary: starting {spec.image} next to {spec.service} {spec.env}")
    try:
        canary = tgt.start_canary(spec, say)
    except Exception as exc:  # noqa: BLE001 - start_canary removed what it started
        return f"it did not start: {getattr(exc, 'message', exc)}"
    try:
        # the production check goes to the canary directly, before any client request can reach it
        say(f"smoke-testing the canary at {canary.scoring_uri}")
        report = smoke_test(canary.scoring_uri, key=keys[0] if keys else None, progress=say, **smoke_args)
        history.record(Record(
            action="smoke-test", status="passed" if report.passed else "failed", scoring_uri=canary.scoring_uri,
            reason=report.reason(), details={**smoke_args, "report": report.to_dict(), "canary": True}, **base))
        failed = "" if report.passed else f"its check failed: {report.reason()}"
        if not failed:
            tgt.weigh_canary(spec.service, spec.env, weight, say)
            failed = watch(previous.scoring_uri, canary.scoring_uri, smoke_args["sample"], keys, seconds, say)
    except BaseException:
        tgt.end_canary(spec.service, spec.env, say)
        raise
    if failed:
        say(f"canary failed ({failed}); removing it")
        tgt.end_canary(spec.service, spec.env, say)
    return failed


def watch(stable_uri: str, canary_uri: str, sample: Any, keys: tuple[str, ...], seconds: float,
          say: Callable[[str], None]) -> str:
    """POST the sample to the stable address and to the canary for ``seconds``; the first failed
    request is the reason returned ("" when all answered 200)."""
    import json
    import time

    import requests

    from .smoke_test import request_body

    headers = {"Content-Type": "application/json"}
    if keys:
        headers["Authorization"] = f"Bearer {keys[0]}"
    body = json.dumps(request_body(sample))
    say(f"canary: watching {stable_uri} and the canary for {seconds:g}s")
    deadline = time.monotonic() + seconds
    count = 0
    with requests.Session() as session:
        while True:
            for what, uri in (("the stable address", stable_uri), ("the canary", canary_uri)):
                try:
                    resp = session.post(uri, data=body, headers=headers, timeout=30)
                except requests.RequestException as exc:
                    return f"{what} failed a request after {count} good ones: {type(exc).__name__}"
                if resp.status_code != 200:
                    return f"{what} answered HTTP {resp.status_code} after {count} good requests: {resp.text[:200]}"
                count += 1
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    say(f"canary: {count} requests answered 200")
    return ""


def _write(history: History, base: dict[str, Any], action: str, info: writeback.WritebackInfo,
           say: Callable[[str], None], **kwargs: Any) -> dict[str, Any]:
    """Write back, record the outcome; a failing registry never undoes a deployment."""
    try:
        written = writeback.write(action, info, **kwargs)
        status = "skipped" if "skipped" in written else "succeeded"
        say(f"write-back to {info.source}: {written.get('skipped') or written.get('aliases') or 'tags set'}")
    except Exception as exc:  # noqa: BLE001 - reported, recorded, never fatal
        written = {"error": getattr(exc, "message", str(exc))}
        status = "failed"
        say(f"write-back to {info.source} failed: {written['error']}")
    history.record(Record(action="writeback", status=status, reason=str(written.get("skipped") or written.get("error") or action),
                          details={"action": action, **written}, **base))
    return {"status": status, **written}
