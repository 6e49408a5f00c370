"""The ``docker`` target: model containers on the local Docker Engine behind a stable nginx address.

Each (service, env) is reachable at ``127.0.0.1:<port>`` (``--port``, kept across updates), served
by its own nginx (see :mod:`.nginx_proxy`) that proxies to the container running now. A container
is published on a random 127.0.0.1 port, with the CPU and memory limits, environment variables and
scoring keys of the spec, and labels naming the service, env, image digest, model and version.

``update`` starts the new container, waits until ``GET /readyz`` answers 200, switches nginx
(reload: old workers finish their in-flight requests), waits for that drain, then stops and removes
the old container; its record is kept in the store's history of replaced deployments. If the new container never gets ready,
it is removed and the old one keeps serving.

State lives in Docker labels, the store (the deployment record; shared through
``--database-url``) and the nginx prefix folder the record names, so ``get``/``list``/``update``/
``delete`` work from any process on this host, whatever its state dir.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from .. import settings
from ..errors import ConfigError, NotFoundError, ServiceError
from . import Deployment, DeploymentSpec, ProgressFn, check_spec, stable_uris
from .nginx_proxy import pick_port
from .state import LocalTarget, ServiceState, now, wait_ready

LABEL = "io.pipeline-plugin.deployment."
MODEL_LABEL = "io.pipeline-plugin.model."
#: a container must answer GET /readyz with 200 within this many seconds
READY_TIMEOUT_S = 180.0
#: how a ready container is kept running (after a crash, a daemon restart or a reboot)
RESTART_POLICY = {"Name": "unless-stopped"}
#: seconds `docker stop` waits after SIGTERM before SIGKILL
STOP_TIMEOUT_S = 10


def spec_hash(spec: DeploymentSpec, image_id: str, port: int) -> str:
    """What makes two deployments the same; ``create`` of the same thing is a no-op."""
    data = {
        "image_id": image_id,
        "port": port,
        "cpu_cores": spec.cpu_cores,
        "memory_gb": spec.memory_gb,
        "environment": dict(sorted(spec.environment.items())),
        "keys": hashlib.sha256("\n".join(spec.keys).encode()).hexdigest(),
        "labels": dict(sorted(spec.labels.items())),
        "replicas": spec.replicas,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class DockerTarget(LocalTarget):
    name = "docker"

    def __init__(self, state_dir: Path | None = None, client: Any = None, ready_timeout: float = READY_TIMEOUT_S) -> None:
        super().__init__(state_dir, ready_timeout)
        self._client = client

    # -- helpers -----------------------------------------------------------------------------
    def client(self) -> Any:
        if self._client is None:
            import docker

            try:
                client = docker.from_env()
                client.ping()
            except Exception as exc:  # noqa: BLE001 - any failure to reach the daemon
                raise ServiceError(
                    f"Docker Engine does not answer ({exc}); start it (`bash scripts/services.sh docker`) "
                    "or deploy with --target process"
                ) from None
            self._client = client
        return self._client

    def _image(self, ref: str, progress: ProgressFn) -> Any:
        import docker

        client = self.client()
        try:
            return client.images.get(ref)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            if Path(ref).is_dir():  # a folder's path is often no image reference at all: said below
                pass
            elif exc.is_client_error():
                raise ConfigError(f"image {ref!r} is not an image reference Docker accepts ({exc.explanation or exc});"
                                  " pass a name[:tag], a name@sha256:digest or an image id") from None
            else:
                raise ServiceError(f"Docker could not look up image {ref!r}: {exc.explanation or exc}") from None
        if Path(ref).is_dir():
            raise ConfigError(
                f"image {ref!r} is a folder; the docker target runs images. Build it with `pipeline-plugin package` "
                "(or `docker build` in that folder), or deploy the folder with --target process"
            )
        if ref.startswith("sha256:"):
            raise NotFoundError(f"image {ref!r} is not on this Docker Engine; package it first or pass an image reference")
        progress(f"pulling {ref}")
        try:
            return client.images.pull(ref)
        except docker.errors.APIError as exc:
            raise NotFoundError(
                f"image {ref!r} is not on this Docker Engine and could not be pulled ({exc.explanation or exc}); "
                "check the name, or run `pipeline-plugin package` first"
            ) from None

    @property
    def scope(self) -> str:
        """Names this target's state dir, so that two installations (say a demo and a test run)
        sharing one Docker Engine never stop or replace each other's containers."""
        return hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:16]

    @staticmethod
    def _scope(state: ServiceState) -> str:
        """The scope of one (service, env): of the folder its record names (``<root>/<service>/<env>``),
        so every job finds its containers even when its own default folder differs."""
        return hashlib.sha256(str(state.directory.parent.parent.resolve()).encode()).hexdigest()[:16]

    def _containers(self, service: str, env: str | None = None, all: bool = True, scope: str | None = None) -> list[Any]:
        filters = [f"{LABEL}scope={scope or self.scope}", f"{LABEL}service={service}"]
        if env is not None:
            filters.append(f"{LABEL}env={env}")
        return self.client().containers.list(all=all, filters={"label": filters})

    # -- internals ---------------------------------------------------------------------------
    def _stop_all(self, state: ServiceState) -> None:
        for container in self._containers(state.service, state.env, scope=self._scope(state)):
            self._remove(container)

    def _apply(self, spec: DeploymentSpec, progress: ProgressFn) -> Deployment:
        state = self._state(spec.service, spec.env)
        with state.locked():
            image = self._image(spec.image, progress)
            record = state.read()
            address = self._address(state)
            port = spec.port or (record or {}).get("port") or pick_port()
            wanted = spec_hash(spec, image.id, port)
            old_running = record is not None and all(self._is_running(c) for c in _ids(record))
            if old_running and record is not None and record.get("spec_hash") == wanted:
                if not address.running():  # e.g. after a reboot: Docker restarted the containers
                    progress(f"restarting the stable address 127.0.0.1:{port} for {spec.service}/{spec.env}")
                    address.switch(port, _upstreams(record), str(record["generation"]), progress)
                if address.served_generation(port) == str(record.get("generation")):
                    progress(f"{spec.service}/{spec.env} already runs {image.id[:19]} at 127.0.0.1:{port}")
                    return self._refresh(state, record)

            generation = int((record or {}).get("generation") or 0) + 1
            started: list[tuple[Any, int]] = []
            try:
                self._start_ready(spec, image, port, wanted, generation, progress, started, self._scope(state))
                address.switch(port, [f"127.0.0.1:{hp}" for _c, hp in started], str(generation), progress)
            except BaseException:
                if record is not None and old_running and address.running():
                    address.switch_back(record["port"], _upstreams(record), str(record["generation"]), progress, record["container"])
                for container, _hp in started:
                    self._remove(container)
                raise
            first = started[0][0]
            deployment = self._deployment(spec, [c for c, _hp in started], image, port)
            new_record = {
                "port": port,
                "generation": generation,
                "container_id": first.id,  # the first replica (all: container_ids)
                "container": first.name,
                "host_port": started[0][1],
                "container_ids": [c.id for c, _hp in started],
                "host_ports": [hp for _c, hp in started],
                "spec_hash": wanted,
                "deployment": deployment.to_dict(),
            }
            state.write(new_record)
            if record is not None:
                state.append_history(record["deployment"], "replaced", replaced_by=image.id)
            keep = set(new_record["container_ids"])
            for other in self._containers(spec.service, spec.env, scope=self._scope(state)):
                if other.id not in keep:
                    progress(f"stopping the previous container {other.name}")
                    self._remove(other)
            return self._refresh(state, new_record)

    def _start_ready(self, spec: DeploymentSpec, image: Any, port: int, wanted: str, generation: int,
                     progress: ProgressFn, started: list[tuple[Any, int]], scope: str) -> None:
        """Start ``spec.replicas`` containers (appended to ``started``, so the caller can remove them
        on failure) and wait until each is ready."""
        for _ in range(spec.replicas):
            started.append(self._start(spec, image, port, wanted, generation, progress, scope))
        for container, host_port in started:
            what = f"container {container.name}"
            try:
                wait_ready("127.0.0.1", host_port, self.ready_timeout, lambda c=container: self._exited(c), progress, what)
            except BaseException:
                logs = self._logs(container)
                if logs:
                    progress(f"last lines of {what}:\n{logs}")
                raise
            progress(f"{what} is ready")
            # restart only once ready: a crash before that is reported with its real exit
            # code (a restarting container's State.ExitCode is its current run's, 0)
            container.update(restart_policy=RESTART_POLICY)

    # -- canary ------------------------------------------------------------------------------
    def start_canary(self, spec: DeploymentSpec, progress: ProgressFn | None = None) -> Deployment:
        """Start ``spec``'s containers next to the ones serving (service, env) and wait until they
        are ready; no request of the stable address reaches them yet (:meth:`weigh_canary`). Returns
        the canary's deployment; its URIs reach the first new container directly. End it with
        :meth:`end_canary` (abort) or a normal :meth:`update` (which replaces old and canary)."""
        progress = progress or (lambda _m: None)
        spec = check_spec(spec)
        state = self._state(spec.service, spec.env)
        with state.locked():
            record = state.read()
            if record is None or not self._address(state).running():
                raise ServiceError(f"{spec.service}/{spec.env} serves nothing now; a canary needs a running version next to it")
            if record.get("canary"):
                raise ServiceError(f"{spec.service}/{spec.env} already runs a canary; end it first")
            image = self._image(spec.image, progress)
            port = record["port"]
            generation = int(record["generation"]) + 1
            started: list[tuple[Any, int]] = []
            try:
                self._start_ready(spec, image, port, spec_hash(spec, image.id, port), generation, progress, started,
                                  self._scope(state))
            except BaseException:
                for container, _hp in started:
                    self._remove(container)
                raise
            record["canary"] = {"container_ids": [c.id for c, _hp in started], "host_ports": [hp for _c, hp in started]}
            state.write(record)
            dep = self._deployment(spec, [c for c, _hp in started], image, port)
            return dataclasses.replace(dep, **stable_uris("127.0.0.1", started[0][1]))

    def weigh_canary(self, service: str, env: str, weight: int, progress: ProgressFn | None = None) -> None:
        """Give the canary ``weight`` percent (1..99) of the stable address's requests (nginx upstream
        weights; the previous containers keep the rest)."""
        progress = progress or (lambda _m: None)
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 99:
            raise ConfigError(f"canary weight must be a whole percent from 1 to 99, got {weight!r}")
        state = self._state(service, env)
        with state.locked():
            record = state.read()
            if record is None or not record.get("canary"):
                raise ServiceError(f"{service}/{env} runs no canary")
            old = _upstreams(record)
            new = [f"127.0.0.1:{hp}" for hp in record["canary"]["host_ports"]]
            # per-server weights such that the canary's servers together get `weight` percent
            upstreams = [f"{u} weight={(100 - weight) * len(new)}" for u in old]
            upstreams += [f"{u} weight={weight * len(old)}" for u in new]
            generation = int(record["generation"]) + 1
            progress(f"canary: {weight}% of 127.0.0.1:{record['port']} to the new version")
            self._address(state).switch(record["port"], upstreams, str(generation), progress)
            record["generation"] = generation
            state.write(record)

    def end_canary(self, service: str, env: str, progress: ProgressFn | None = None) -> None:
        """Abort a canary: the stable address goes back to the previous containers only (in-flight
        requests to the canary finish), then the canary's containers are removed; idempotent."""
        progress = progress or (lambda _m: None)
        state = self._state(service, env)
        with state.locked():
            record = state.read()
            if record is None or not record.get("canary"):
                return
            canary = record["canary"]
            generation = int(record["generation"]) + 1
            progress(f"canary: sending all of 127.0.0.1:{record['port']} back to {record['container']}")
            self._address(state).switch(record["port"], _upstreams(record), str(generation), progress)
            record["generation"] = generation
            record.pop("canary")
            state.write(record)
            for container_id in canary["container_ids"]:
                try:
                    container = self.client().containers.get(container_id)
                except Exception:  # noqa: BLE001 - already gone
                    continue
                progress(f"removing the canary container {container.name}")
                self._remove(container)

    def _is_running(self, container_id: str) -> bool:
        import docker

        try:
            return self.client().containers.get(container_id).status == "running"
        except docker.errors.NotFound:
            return False

    def _start(self, spec: DeploymentSpec, image: Any, port: int, wanted: str, generation: int, progress: ProgressFn,
               scope: str):
        import docker

        labels_in = image.labels or {}
        model = labels_in.get(MODEL_LABEL + "name")
        version = labels_in.get(MODEL_LABEL + "version")
        environment = {k: str(v) for k, v in spec.environment.items()}
        environment.setdefault("PORT", str(settings.RUNTIME_PORT))
        if spec.keys:
            environment["PIPELINE_PLUGIN_SCORING_KEYS"] = ",".join(spec.keys)
        container_port = int(environment["PORT"])
        for key in spec.labels:
            if key.startswith(LABEL):
                raise ConfigError(f"label {key!r} uses the reserved prefix {LABEL}; choose another name")
        labels = {
            **{str(k): str(v) for k, v in spec.labels.items()},
            LABEL + "scope": scope,
            LABEL + "service": spec.service,
            LABEL + "env": spec.env,
            LABEL + "image": spec.image,
            LABEL + "image-id": image.id,
            LABEL + "model": model or "",
            LABEL + "version": version or "",
            LABEL + "created": now(),
            LABEL + "port": str(port),
            LABEL + "generation": str(generation),
            LABEL + "spec-hash": wanted,
        }
        kwargs: dict[str, Any] = {
            "detach": True,
            "environment": environment,
            "labels": labels,
            "restart_policy": {"Name": "no"},  # RESTART_POLICY once ready (see _apply)
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
        }
        user = (image.attrs.get("Config") or {}).get("User") or ""
        if user in ("", "root", "0", "0:0"):
            kwargs["user"] = "10001:10001"  # never run a model as root
        if spec.cpu_cores:
            kwargs["nano_cpus"] = int(spec.cpu_cores * 1e9)
        if spec.memory_gb:
            kwargs["mem_limit"] = int(spec.memory_gb * 1024**3)
        last_error: Exception | None = None
        for _attempt in range(5):
            host_port = pick_port()
            name = f"pp-{spec.service}-{spec.env}-{secrets.token_hex(3)}"
            progress(f"starting container {name} from {image.id[:19]} ({model or 'model'} {version or ''})".rstrip())
            try:
                container = self.client().containers.run(
                    image.id, name=name, ports={f"{container_port}/tcp": ("127.0.0.1", host_port)}, **kwargs
                )
                return container, host_port
            except docker.errors.APIError as exc:
                last_error = exc
                text = str(exc.explanation or exc)
                try:
                    self.client().containers.get(name).remove(force=True)
                except docker.errors.APIError:
                    pass
                if "allocated" in text or "in use" in text:
                    continue  # someone took the port between pick and bind: pick another
                raise ServiceError(f"Docker could not start a container from {spec.image!r}: {text}") from None
        raise ServiceError(f"Docker could not publish a port for {spec.service}/{spec.env}: {last_error}")

    def _exited(self, container: Any) -> str | None:
        import docker

        try:
            container.reload()
        except docker.errors.NotFound:
            return "the container was removed"
        # with the restart policy a crashing runtime cycles through "restarting": fail fast on it
        if container.status in ("exited", "dead", "restarting") or container.attrs.get("RestartCount", 0) > 0:
            code = container.attrs.get("State", {}).get("ExitCode")
            return f"it exited with code {code}: {self._logs(container)}"
        return None

    @staticmethod
    def _logs(container: Any, lines: int = 20) -> str:
        try:
            return container.logs(tail=lines).decode(errors="replace").strip()
        except Exception:  # noqa: BLE001 - logs are a courtesy in an error path
            return ""

    @staticmethod
    def _remove(container: Any) -> None:
        import docker

        try:
            container.stop(timeout=STOP_TIMEOUT_S)
        except docker.errors.APIError:
            pass
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise ServiceError(f"Docker could not remove container {container.name}: {exc}") from None

    def _deployment(self, spec: DeploymentSpec, containers: list[Any], image: Any, port: int) -> Deployment:
        container = containers[0]
        container.reload()
        labels = container.labels or {}
        host = container.attrs.get("HostConfig", {})
        return Deployment(
            service=spec.service,
            env=spec.env,
            image=labels.get(LABEL + "image", spec.image),
            image_id=labels.get(LABEL + "image-id", image.id),
            model=labels.get(LABEL + "model") or None,
            version=labels.get(LABEL + "version") or None,
            created_at=labels.get(LABEL + "created"),
            status="running",
            details={
                "target": self.name,
                "port": port,
                "container": container.name,
                "container_id": container.id,
                "containers": [c.name for c in containers],
                "replicas": len(containers),
                "cpu_cores": (host.get("NanoCpus") or 0) / 1e9 or None,
                "memory_gb": (host.get("Memory") or 0) / 1024**3 or None,
                "environment": {str(k): str(v) for k, v in spec.environment.items()},
                "labels": {str(k): str(v) for k, v in spec.labels.items()},
            },
            **stable_uris("127.0.0.1", port),
        )

    def _problems(self, record: dict[str, Any]) -> list[str]:
        """Why the recorded containers do not run now (empty when they do)."""
        import docker

        reasons = []
        for container_id in _ids(record):
            try:
                container = self.client().containers.get(container_id)
                if container.status != "running":
                    reasons.append(f"container {container.name} is {container.status}")
            except docker.errors.NotFound:
                reasons.append(f"container {container_id[:12]} is gone")
        return reasons


def _ids(record: dict[str, Any]) -> list[str]:
    return list(record.get("container_ids") or [record["container_id"]])


def _upstreams(record: dict[str, Any]) -> list[str]:
    return [f"127.0.0.1:{hp}" for hp in (record.get("host_ports") or [record["host_port"]])]


TARGET = DockerTarget()
