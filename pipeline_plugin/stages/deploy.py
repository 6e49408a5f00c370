"""The deploy stage: put an image in one environment of a service and wait until it is ready.

``deploy(spec, target_name, progress)`` is what ``pipeline-plugin deploy``, the local provider and
the demo call. It creates the deployment, or replaces the running one with zero failed requests
(the target's ``update``), and returns the ready :class:`~pipeline_plugin.targets.Deployment`.
``spec_from_config`` builds the spec from flags and a deployment config file (flags win).
"""

from __future__ import annotations

from typing import Callable, Mapping

from ..deployconfig import DeployConfig
from ..errors import ServiceError
from ..targets import BACKENDS, Deployment, DeploymentSpec, get_target


def docker_answers(timeout: float = 3.0) -> bool:
    """True when a Docker Engine answers on this machine (DOCKER_HOST or the default socket)."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return False


def default_target_name() -> str:
    """``docker`` when a Docker Engine answers, else ``process``."""
    return "docker" if docker_answers() else "process"


def target_for_compute_type(compute_type: str | None) -> str | None:
    """The target a deployment config's ``computeType`` names (``aci``/``local`` mean docker)."""
    return {
        None: None,
        "local": "docker",
        "aci": "docker",
        "docker": "docker",
        "process": "process",
        "aks": "kubernetes",
        "kubernetes": "kubernetes",
    }[compute_type]


def spec_from_config(
    service: str,
    env: str,
    image: str,
    config: DeployConfig | None = None,
    port: int | None = None,
    labels: Mapping[str, str] | None = None,
) -> DeploymentSpec:
    """The spec for ``image`` in ``env``: the config file's settings, with ``port`` (a flag) winning."""
    config = config or DeployConfig()
    autoscaler = None
    if config.autoscaler is not None:
        a = config.autoscaler
        autoscaler = (a.min_replicas, a.max_replicas, a.target_utilization)
    return DeploymentSpec(
        service=service,
        env=env,
        image=image,
        port=port if port is not None else config.port,
        cpu_cores=config.cpu_cores,
        memory_gb=config.memory_gb,
        environment=dict(config.environment_variables),
        keys=tuple(config.keys),
        replicas=config.replicas,
        labels={**dict(config.tags), **dict(labels or {})},
        autoscaler=autoscaler,
    )


def deploy(
    spec: DeploymentSpec,
    target_name: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Deployment:
    """Deploy ``spec`` on ``target_name`` (default: docker if an engine answers, else process) and
    return it once ready. Raises ConfigError (bad input), NotFoundError (no such image),
    ServiceError (Docker/nginx/cluster failed) or StageFailed (the new version never got ready; the
    previous one keeps serving)."""
    say = progress or (lambda _msg: None)
    name = target_name or default_target_name()
    if name not in BACKENDS:
        get_target(name)  # raises ConfigError with a suggestion
    target = get_target(name)
    current = target.get(spec.service, spec.env)
    if current is None:
        say(f"deploying {spec.image} as {spec.service}/{spec.env} on the {name} target")
        deployment = target.create(spec, say)
    else:
        say(f"updating {spec.service}/{spec.env} on the {name} target from {current.image_id[:19]} to {spec.image}")
        deployment = target.update(spec, say)
    if deployment.status != "running":
        raise ServiceError(f"{spec.service}/{spec.env} is {deployment.status} after deploying: {deployment.details.get('problems')}")
    say(f"{spec.service}/{spec.env} is ready at {deployment.scoring_uri}")
    return deployment
