"""`pipeline-plugin deploy`: run an image in one environment of a service and wait until it is ready."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .. import deployconfig
from ..ci import output as ci_output
from ..errors import ConfigError, PipelinePluginError
from ..output import Progress, add_json_flag, emit
from ..targets import BACKENDS, check_spec
from ..store import add_database_url_flag, use_database_url

KEY_ENV = "PIPELINE_PLUGIN_SCORING_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "deploy",
        help="deploy a model image to an environment (docker, process or kubernetes) and wait until ready",
        description="Deploy IMAGE as SERVICE in ENV. A running deployment is replaced with zero failed requests: "
        "the new version starts, must answer GET /readyz, then the stable address switches to it. "
        "--target docker: a container behind an nginx stable address 127.0.0.1:PORT; --target process: the "
        "runtime as a local process (IMAGE is a `package --generate-dockerfile` folder); --target kubernetes: "
        "Deployment, Service and HorizontalPodAutoscaler applied to the cluster KUBECONFIG names "
        "(--dry-run prints them). Default target: docker when a Docker Engine answers, else process.",
    )
    p.add_argument("--image", required=True, help="image reference or digest (sha256:...); a package folder for --target process")
    p.add_argument("--name", required=True, help="service name (lowercase letters, digits, '-')")
    p.add_argument("--env", required=True, help="environment, e.g. staging or production")
    p.add_argument("--target", choices=sorted(BACKENDS), help="where to run it (default: docker if a Docker Engine answers, else process)")
    p.add_argument("--port", type=int, help="port of the stable address (default: the config's, else kept or picked)")
    p.add_argument("--config", type=Path, help="deployment config (YAML or JSON, like Azure ML's deploymentconfig.json)")
    p.add_argument("--key", action="append", default=None,
                   help=f"scoring key clients must send as `Authorization: Bearer KEY` (repeatable; default ${KEY_ENV})")
    p.add_argument("--label", action="append", default=[], metavar="NAME=VALUE", help="extra label on the deployment (repeatable)")
    p.add_argument("--namespace", help="Kubernetes namespace (default: the kubeconfig context's)")
    p.add_argument("--dry-run", action="store_true", help="print what would be deployed (Kubernetes: the manifests) and change nothing")
    p.add_argument("--ready-timeout", type=float, default=None,
                   help="seconds the new version has to get ready (default 180; kubernetes: the whole rollout, default 600)")
    p.add_argument("--state-dir", type=Path, help="state dir (default $PIPELINE_PLUGIN_STATE_DIR)")
    add_database_url_flag(p)
    add_json_flag(p)
    p.set_defaults(func=run)


def _labels(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--label {item!r} is not NAME=VALUE; write it like --label team=fraud")
        out[name] = value
    return out


def _target_name(args: argparse.Namespace, config: deployconfig.DeployConfig | None) -> str:
    from ..stages.deploy import default_target_name, target_for_compute_type

    if args.target:
        return args.target
    from_config = target_for_compute_type(config.compute_type) if config else None
    return from_config or default_target_name()


def result(deployment: Any, target: str) -> dict[str, Any]:
    data = deployment.to_dict()
    data["target"] = target
    return data


def human(d: Any) -> str:
    lines = [
        f"{d.service} {d.env}: {d.status} on {d.details.get('target')}",
        f"  model       {d.model or '?'} v{d.version or '?'}",
        f"  image       {d.image}",
        f"  image id    {d.image_id}",
        f"  scoring URI {d.scoring_uri}",
        f"  swagger     {d.swagger_uri}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.state_dir:
        os.environ["PIPELINE_PLUGIN_STATE_DIR"] = str(args.state_dir.resolve())
    use_database_url(args.database_url)
    config = deployconfig.load(args.config) if args.config else None
    if args.key is not None or os.environ.get(KEY_ENV):
        keys = tuple(args.key or [os.environ[KEY_ENV]])
        config = deployconfig.merge(config or deployconfig.DeployConfig(), keys=keys)
    from ..stages.deploy import deploy, spec_from_config

    spec = check_spec(spec_from_config(args.name, args.env, args.image, config, port=args.port, labels=_labels(args.label)))
    target_name = _target_name(args, config)

    if args.dry_run:
        return _dry_run(args, spec, target_name)

    from ..targets import get_target

    target = get_target(target_name)
    if target_name == "kubernetes" and args.namespace:
        target.namespace = args.namespace
    if args.ready_timeout is not None:
        if args.ready_timeout <= 0:
            raise ConfigError(f"--ready-timeout is {args.ready_timeout}; give a number of seconds greater than 0")
        for attribute in ("ready_timeout", "rollout_timeout"):  # docker/process; kubernetes
            if hasattr(target, attribute):
                setattr(target, attribute, args.ready_timeout)
    history = _history()
    progress = Progress()
    try:
        deployment = deploy(spec, target_name, progress)
    except PipelinePluginError as exc:
        _record(history, spec, target_name, "failed", exc.message, None)
        raise
    _record(history, spec, target_name, "succeeded", f"deployed {spec.image}", deployment)
    ci_output.set_outputs({
        "scoring-uri": deployment.scoring_uri,
        "swagger-uri": deployment.swagger_uri,
        "image": deployment.image_id,
        "env": deployment.env,
    })
    emit(args, result(deployment, target_name), human(deployment))
    return 0


def _dry_run(args: argparse.Namespace, spec: Any, target_name: str) -> int:
    if target_name == "kubernetes":
        from ..targets.kubernetes import manifests

        docs = manifests(spec, args.namespace)
        if args.json:
            print(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2))
        else:
            import yaml

            sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
        if spec.keys:
            print(f"# the scoring keys go into Secret {spec.service}-{spec.env}-scoring-keys on apply (not printed)", file=sys.stderr)
        return 0
    plan = {
        "target": target_name,
        "service": spec.service,
        "env": spec.env,
        "image": spec.image,
        "port": spec.port,
        "cpu_cores": spec.cpu_cores,
        "memory_gb": spec.memory_gb,
        "environment": dict(spec.environment),
        "keys": len(spec.keys),
        "labels": dict(spec.labels),
    }
    emit(args, plan, "\n".join(f"{k}: {v}" for k, v in plan.items()))
    return 0


def _history() -> Any:
    """The shared deployment history (``pipeline-plugin status`` reads it), when available."""
    try:
        from ..history import History

        return History()
    except Exception:  # noqa: BLE001 - the deployment itself must not depend on the history store
        return None


def _record(history: Any, spec: Any, target: str, status: str, reason: str, deployment: Any) -> None:
    if history is None:
        return
    try:
        from ..history import Record, current_actor

        history.record(Record(
            service=spec.service, env=spec.env, action="deploy", status=status, target=target,
            model=getattr(deployment, "model", None), version=getattr(deployment, "version", None),
            image=spec.image, image_id=getattr(deployment, "image_id", None),
            scoring_uri=getattr(deployment, "scoring_uri", None), run_id=spec.labels.get("io.pipeline-plugin.run-id"),
            cause=f"user:{current_actor()}", reason=reason,
        ))
    except Exception as exc:  # noqa: BLE001 - a history write never undoes a deployment
        print(f"warning: could not record the deployment in the history: {exc}", file=sys.stderr)
