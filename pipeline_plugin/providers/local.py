"""The ``local`` provider: the whole chain in-process on this machine.

For one matched rule, ``dispatch(run)``:

1. fetches the version's files from the registry that announced it through
   :mod:`pipeline_plugin.fetch` (MLflow ``models:/<name>/<version>``, the SageMaker model package,
   the Azure ML asset, ``hf://repo@sha``; a local path or ``file://`` ``artifact_uri`` only below the
   listener's ``fetch.allowed_roots`` or the rule's ``allowed_roots``, else refused and recorded);
   an ``image.pushed`` event is already an image: steps 1-2 are skipped and that digest deployed;
2. packages them with the rule's ``entry_script``, ``source_dir``, ``requirements``/``conda`` (or
   none: no-code packaging of an MLflow model);
3. deploys the image to ``staging`` (``target``, ``staging_port``, ``config``);
4. smoke-tests staging with the rule's ``sample``/``expect``/``tolerance``;
5. promotes to ``production`` (``production_port``, ``strategy``, ``approval``), which checks
   production and rolls back automatically when that check fails.

Every stage is recorded in the deployment history (``pipeline-plugin status``). The result is
``succeeded`` (production serves the version), ``pending-approval`` (staging passed; waiting for
``pipeline-plugin approve RUN``) or ``failed`` with the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .. import settings, writeback
from ..errors import ConfigError, PipelinePluginError, StageFailed
from ..events import ModelVersionEvent
from ..history import History, Record
from . import DispatchResult, PipelineRun

if TYPE_CHECKING:
    from ..fetch import FetchedModel

log = logging.getLogger("pipeline_plugin.providers.local")

#: events the local chain deploys; anything else (deleted, rejected ...) is recorded, not deployed
DEPLOYABLE_KINDS = ("model_version.created", "model_version.approved", "alias.set", "tag.set", "image.pushed")


def service_name(pipeline: dict[str, Any], event: ModelVersionEvent) -> str:
    """The rule's ``service``, else the model name made a DNS label (``Churn_Model`` -> ``churn-model``)."""
    if pipeline.get("service"):
        return str(pipeline["service"])
    name = re.sub(r"[^a-z0-9-]+", "-", event.model.lower()).strip("-")[:63].strip("-")
    return name or "model"


def _path(value: Any, rules_dir: Path | None) -> Path | None:
    if value in (None, ""):
        return None
    p = Path(str(value)).expanduser()
    if not p.is_absolute() and rules_dir is not None:
        p = rules_dir / p
    return p


def event_uri(event: ModelVersionEvent) -> str | None:
    """Where the version's files are, as a URI :mod:`pipeline_plugin.fetch` takes: asked of the registry
    that announced it when the event names one (MLflow ``models:/``, the SageMaker model package's
    ARN, the Azure ML asset id), else the event's ``artifact_uri``."""
    registry = dict(event.registry)
    artifact = event.artifact_uri or ""
    remote = "://" in artifact and not artifact.startswith("file://")
    if event.source == "mlflow" and (registry.get("tracking_uri") or not artifact or remote
                                     or artifact.startswith(("models:/", "runs:/", "mlflow-artifacts:/"))):
        return f"models:/{event.model}/{event.version}"
    if event.source == "sagemaker" and registry.get("account") and registry.get("region"):
        return (f"arn:aws:sagemaker:{registry['region']}:{registry['account']}:model-package/"
                f"{registry.get('model_package_group') or event.model}/{event.version}")
    return artifact or None


def allowed_roots(run: PipelineRun, pipeline: dict[str, Any]) -> list[Path]:
    """The folders local paths from events may lie below: the listener's ``fetch.allowed_roots``
    and the rule's ``allowed_roots`` (relative to the rule file). None by default."""
    roots = [Path(r) for r in run.allowed_roots]
    for value in pipeline.get("allowed_roots") or ():
        roots.append(_path(value, run.rules_dir))  # type: ignore[arg-type]
    return roots


def fetch_model(event: ModelVersionEvent, dest: Path, progress: Callable[[str], None],
                roots: list[Path] | tuple[Path, ...] = ()) -> "FetchedModel":
    """Download the version's files into ``dest`` (emptied first) through :mod:`pipeline_plugin.fetch`.
    Local paths and ``file://`` URIs from the event are fetched only below ``roots``."""
    from ..fetch import fetch

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    uri = event_uri(event)
    if not uri:
        raise StageFailed(f"the {event.source} event for {event.model} v{event.version} names no artifact_uri; "
                          "nothing to fetch")
    progress(f"fetching {event.model} v{event.version} from {uri}")
    # an MLflow source's tracking_uri is one the listener's config names; any other sender's is only
    # its say-so, and MLflow's credentials (MLFLOW_TRACKING_TOKEN ...) must never go to such an address
    registry = {k: v for k, v in event.registry.items() if event.source == "mlflow" or k != "tracking_uri"}
    return fetch(uri, dest, registry=registry, allowed_roots=list(roots), progress=progress)


def pushed_image(event: ModelVersionEvent) -> str:
    """The image an ``image.pushed`` event announced, by digest when it has one (``repo@sha256:...``)."""
    ref = event.image_uri or event.model
    if not event.digest:
        return ref
    name = ref.split("@")[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":")[0]
    return f"{name}@{event.digest}"


def input_example(model_path: Path) -> Any | None:
    """An MLflow model's saved serving input example, as a sample for no-code models."""
    for name in ("serving_input_example.json", "input_example.json"):
        p = model_path / name if model_path.is_dir() else None
        if p is not None and p.exists():
            data = json.loads(p.read_text())
            if isinstance(data, dict):
                for key in ("dataframe_split", "dataframe_records", "inputs", "instances"):
                    if key in data:
                        return data[key]
            return data
    return None


@contextlib.contextmanager
def service_lock(state_dir: Path, service: str, say: Callable[[str], None]) -> Iterator[None]:
    """One pipeline at a time per service (across threads and processes sharing the state dir):
    two rules, or two workers, never deploy and promote one service at once."""
    import fcntl

    folder = Path(state_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', service)}.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting: another pipeline of {service} is running")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class LocalProvider:
    name = "local"
    #: dispatching the same run again resumes it safely (stages are idempotent, history says what's done)
    idempotent = True

    def dispatch(self, run: PipelineRun, progress: Callable[[str], None] | None = None) -> DispatchResult:
        started = time.monotonic()
        timings: dict[str, float] = {}
        pipeline = dict(run.pipeline or {})
        event = run.event
        history = History(run.state_dir)
        service = service_name(pipeline, event)
        def say(message: str) -> None:
            line = f"[{run.run_id[:12]} {service}] {message}"
            if progress is not None:
                progress(line)
            else:  # in `serve`, the worker's log shows each step
                log.info("%s", line)

        done = [r for r in history.records(service=service, run_id=run.run_id, action="promote") if r.status == "succeeded"]
        if done:
            return DispatchResult(self.name, "succeeded", detail=f"already done: {done[0].reason}",
                                  data={"service": service, "scoring_uri": done[0].scoring_uri})
        if event.kind not in DEPLOYABLE_KINDS:
            return DispatchResult(self.name, "failed", detail=f"{event.kind} events are not deployed by the local provider")
        try:
            with service_lock(history.state_dir, service, say):
                data = self._run(run, pipeline, event, history, service, say, timings)
        except PipelinePluginError as exc:
            say(f"failed: {exc.message}")
            return DispatchResult(self.name, "failed", detail=exc.message, data={"service": service, "timings": timings})
        data["timings"] = {**timings, "total": round(time.monotonic() - started, 3)}
        return DispatchResult(self.name, data.pop("status"), detail=data.pop("detail"), data=data)

    # ---- the chain ------------------------------------------------------------------------------
    def _run(self, run: PipelineRun, pipeline: dict[str, Any], event: ModelVersionEvent, history: History,
             service: str, say: Callable[[str], None], timings: dict[str, float]) -> dict[str, Any]:
        from ..stages.promote import ENV_VAR, docker_answers, promote
        from ..stages.smoke_test import load_json_file, smoke_test
        from ..targets import DeploymentSpec, get_target

        rules_dir = run.rules_dir
        state_dir = history.state_dir
        cause = f"event:{event.source}:{event.kind}:{event.delivery_id}"
        target_name = pipeline.get("target") or ("docker" if docker_answers() else "process")
        origin = {"source": event.source, "registry": dict(event.registry)}
        base = dict(service=service, model=event.model, version=event.version, run_id=run.run_id, cause=cause,
                    target=target_name)
        work = state_dir / "runs" / re.sub(r"[^A-Za-z0-9_.-]", "_", run.run_id)
        config = None
        if pipeline.get("config"):
            from .. import deployconfig

            config = deployconfig.load(_path(pipeline["config"], rules_dir))

        def stage(name: str, fn: Callable[[], Any]) -> Any:
            t0 = time.monotonic()
            try:
                return fn()
            finally:
                timings[name] = round(time.monotonic() - t0, 3)

        # 1. fetch + package (an image.pushed event is already an image: deploy that digest)
        if event.kind == "image.pushed":
            if target_name == "process":
                raise ConfigError(f"rule {run.rule_name!r}: an image.pushed event is deployed on the docker (or "
                                  "kubernetes) target; the process target runs packaged folders. Set target: docker")
            image_ref = image_name = pushed_image(event)
            image_id, model_path = None, None
            say(f"{event.model} {event.version} is an image: deploying {image_ref} without packaging")
        else:
            image_ref, image_name, image_id, model_path = self._package(
                run, pipeline, event, history, service, say, stage, base, origin, target_name, work)

        # 2. deploy staging
        tgt = get_target(target_name)
        keys = tuple(config.keys) if config else ()
        staging_spec = DeploymentSpec(
            service=service, env="staging", image=image_ref,
            port=pipeline.get("staging_port") or (config.port if config else None),
            cpu_cores=config.cpu_cores if config else None, memory_gb=config.memory_gb if config else None,
            environment={**(dict(config.environment_variables) if config else {}), ENV_VAR: "staging"}, keys=keys,
            labels={"io.pipeline-plugin.run-id": run.run_id},
        )
        say(f"deploying {image_ref} to staging on {target_name}")
        try:
            staging = stage("deploy_staging", lambda: tgt.update(staging_spec, say))
        except PipelinePluginError as exc:
            history.record(Record(action="deploy", status="failed", env="staging", image=image_name,
                                  image_id=image_id, reason=exc.message, details=origin, **base))
            raise StageFailed(f"staging deployment failed: {exc.message}; production untouched") from exc
        history.record(Record(action="deploy", status="succeeded", env="staging", image=image_name,
                              image_id=staging.image_id, scoring_uri=staging.scoring_uri,
                              reason=f"{event.kind} {event.model} v{event.version}", details=origin, **base))

        # 3. smoke test staging
        sample_path = _path(pipeline.get("sample"), rules_dir)
        expect_path = _path(pipeline.get("expect"), rules_dir)
        sample = (load_json_file(sample_path, "pipeline.sample") if sample_path
                  else input_example(model_path) if model_path is not None else None)
        if sample is None:
            raise ConfigError(
                f"rule {run.rule_name!r} names no pipeline.sample and the model has no input example; add "
                "`sample: path/to/sample.json` to the rule's pipeline section"
            )
        expect = load_json_file(expect_path, "pipeline.expect") if expect_path else None
        tolerance = float(pipeline.get("tolerance", 1e-6))
        say(f"smoke-testing staging at {staging.scoring_uri}")
        report = stage("smoke_staging", lambda: smoke_test(
            staging.scoring_uri, sample, key=keys[0] if keys else None, expect=expect, has_expect=expect_path is not None,
            tolerance=tolerance, progress=say,
        ))
        details = {"sample": sample, "tolerance": tolerance, "requests": report.requests, "p99_ms": None,
                   "has_expect": expect_path is not None, "report": report.to_dict(), **origin}
        if expect_path is not None:
            details["expect"] = expect
        history.record(Record(action="smoke-test", status="passed" if report.passed else "failed", env="staging",
                              image=image_name, image_id=staging.image_id, scoring_uri=staging.scoring_uri,
                              reason=report.reason(), details=details, **base))
        if not report.passed:
            info = writeback.WritebackInfo(source=event.source, registry=event.registry, scoring_uri=staging.scoring_uri,
                                           image=staging.image_id, reason=report.reason())
            try:
                writeback.write("status", info, model=event.model, version=event.version, status="failed-staging")
            except Exception as exc:  # noqa: BLE001 - the failure report matters more than the tag
                say(f"write-back of the staging failure failed: {getattr(exc, 'message', exc)}")
            raise StageFailed(f"staging smoke test failed: {report.reason()}; production untouched")

        # 4. promote (checks production, rolls back on failure)
        result = stage("promote", lambda: promote(
            service, from_env="staging", to_env="production", target=target_name,
            port=pipeline.get("production_port"), strategy=pipeline.get("strategy") or "blue-green", keys=keys,
            history=history, run_id=run.run_id, cause=cause, require_approval=bool(pipeline.get("approval")),
            environment=dict(config.environment_variables) if config else None, progress=say,
        ))
        out = {"service": service, "staging_uri": staging.scoring_uri, "scoring_uri": result.scoring_uri,
               "image_id": staging.image_id, "promote": result.to_dict()}
        if result.status == "pending-approval":
            return {**out, "status": "pending-approval", "detail": result.reason}
        if result.status in ("promoted", "unchanged"):
            return {**out, "status": "succeeded",
                    "detail": f"{event.model} v{event.version} serves production at {result.scoring_uri}"}
        return {**out, "status": "failed", "detail": result.reason}


    def _package(self, run: PipelineRun, pipeline: dict[str, Any], event: ModelVersionEvent, history: History,
                 service: str, say: Callable[[str], None], stage: Callable[..., Any], base: dict[str, Any],
                 origin: dict[str, Any], target_name: str, work: Path) -> tuple[str, str, str | None, Path]:
        """Fetch the version and build its image; (deployable ref, image name, image id, model path)."""
        rules_dir = run.rules_dir
        roots = allowed_roots(run, pipeline)
        try:
            fetched = stage("fetch", lambda: fetch_model(event, work / "model", say, roots))
        except PipelinePluginError as exc:  # shown by `status` like any other stage
            history.record(Record(action="fetch", status="failed", env="staging",
                                  reason=f"could not fetch {event.model} v{event.version}: {exc.message}", **base))
            raise
        from ..stages.package import ModelRef, PackageSpec, model_dependencies, package

        entry = _path(pipeline.get("entry_script"), rules_dir)
        repo = pipeline.get("image_repository") or f"pipeline-plugin/{service}"
        tag = re.sub(r"[^A-Za-z0-9_.-]", "-", f"v{event.version}-{run.run_id[:8]}")[:128]
        spec = PackageSpec(
            models=[ModelRef(name=event.model, version=event.version, path=fetched.path)],
            image=f"{repo}:{tag}",
            entry_script=entry,
            source_dir=_path(pipeline.get("source_dir"), rules_dir),
            requirements=_path(pipeline.get("requirements"), rules_dir),
            conda=_path(pipeline.get("conda"), rules_dir),
            base_image=pipeline.get("base_image") or settings.default_base_image(),
            source=event.source,
            registry=event.registry_key(),
            # the process target runs the image's build context as a folder, no Docker needed
            generate_dockerfile=work / "package" if target_name == "process" else None,
        )
        model_dependencies(spec, [fetched], say)
        if spec.generate_dockerfile is not None and spec.generate_dockerfile.exists():
            shutil.rmtree(spec.generate_dockerfile)
        say(f"packaging {event.model} v{event.version} as {spec.image}")
        try:
            built = stage("package", lambda: package(spec, say))
        except PipelinePluginError as exc:
            history.record(Record(action="package", status="failed", env="staging", reason=exc.message, **base))
            raise
        image_ref = str(built.dockerfile_dir) if built.image_id is None and built.dockerfile_dir else (built.image_id or built.image)
        history.record(Record(action="package", status="succeeded", env="staging", image=built.image,
                              image_id=built.image_id, reason=f"built {built.image_id and built.image or image_ref}",
                              details={**origin, "model_digest": built.model_digest}, **base))
        return image_ref, built.image, built.image_id, fetched.path


PROVIDER = LocalProvider()
