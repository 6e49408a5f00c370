"""The ``kubernetes`` target: a Deployment, a Service and a HorizontalPodAutoscaler per (service, env).

``manifests(spec)`` builds them (``pipeline-plugin deploy --target kubernetes --dry-run`` prints
them): the runtime's liveness route (``GET /livez``, answers while init() loads the model) is the
startup and liveness probe, its readiness route (``GET /readyz``, 200 once init() succeeded) the
readiness probe; the grace period after SIGTERM covers the preStop pause and the runtime's bounded
shutdown (``PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS``, default ``SCORING_TIMEOUT_MS`` + 5 s); CPU and memory requests and limits come from the
deployment config; the rolling update has ``maxUnavailable: 0`` (a new pod must be ready before an
old one goes); pods run as uid 10001 without privileges. Scoring keys go into a Secret that the
pods read as ``PIPELINE_PLUGIN_SCORING_KEYS``; the Secret is applied but never printed.

``create``/``update`` apply them with the kubernetes Python client (server-side apply, field manager
``pipeline-plugin``) to the cluster that ``KUBECONFIG`` (or the in-cluster service account)
configures, and wait until the rollout is complete. The stable address is the Service:
``http://<service>-<env>.<namespace>.svc.cluster.local:<port>`` (port 80 unless ``--port``), which
answers inside the cluster only; where an ingress or load balancer publishes the Services,
``PIPELINE_PLUGIN_KUBERNETES_URL`` gives the address the smoke tests and users reach instead, as a
template of ``{name}`` (``<service>-<env>``), ``{service}``, ``{env}``, ``{namespace}`` and
``{port}``, e.g. ``https://{name}.models.example.com``.
Kubernetes pulls images from a registry, so the image must be a registry reference
(``repo:tag`` or ``repo@sha256:...``), not a local image id.

The cluster is the truth of what serves, and a passing smoke test travels with the Deployment it
checked: ``annotate_smoke_test`` merges ``pipeline-plugin.io/smoke-test-*`` annotations into the
Deployment's metadata (the image that passed, the report's SHA-256, when, and the check to repeat:
the sample and expected output's digests, inline too while small, and the options; never a key),
so ``promote`` on a runner with no shared database trusts that image, and only that image.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from .. import settings
from ..errors import ConfigError, ServiceError, StageFailed
from . import Deployment, DeploymentSpec, ProgressFn, check_name, check_spec

MANAGED_BY = "pipeline-plugin"
ANNOTATION = "pipeline-plugin.io/"
ROLLOUT_TIMEOUT_S = 600.0
DEFAULT_SERVICE_PORT = 80
FIELD_MANAGER = "pipeline-plugin"


def _quiet(_msg: str) -> None:
    pass


def object_name(service: str, env: str) -> str:
    name = f"{service}-{env}"
    if len(name) > 63:
        raise ConfigError(f"service and env make the Kubernetes name {name!r}, longer than 63 characters; use a shorter --name")
    return name


def cpu_quantity(cores: float) -> str:
    return f"{max(1, round(cores * 1000))}m"


def memory_quantity(gb: float) -> str:
    return f"{max(1, round(gb * 1024))}Mi"


def _grace_period_s(variables: dict[str, str]) -> int:
    """preStop's 5 s + the runtime's bounded shutdown (PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS, default
    SCORING_TIMEOUT_MS + 5 s) + 5 s to exit: Kubernetes' SIGKILL must not cut a drain the runtime allows."""
    def number(name: str, default: int) -> int:
        try:
            return max(0, int(variables.get(name, "") or default))
        except ValueError:
            return default

    shutdown_ms = number("PIPELINE_PLUGIN_SHUTDOWN_TIMEOUT_MS", number("SCORING_TIMEOUT_MS", 60_000) + 5_000)
    return 5 + -(-shutdown_ms // 1000) + 5


def manifests(spec: DeploymentSpec, namespace: str | None = None, with_secret: bool = False) -> list[dict[str, Any]]:
    """Deployment, Service and HorizontalPodAutoscaler (and, with ``with_secret``, the Secret holding
    the scoring keys) for ``spec``, as plain dicts ready for YAML/JSON or the API."""
    check_spec(spec)
    if spec.image.startswith("sha256:"):
        raise ConfigError(
            f"image {spec.image!r} is a local image id; Kubernetes pulls from a registry, so pass a registry "
            "reference (repo:tag or repo@sha256:...), e.g. from `pipeline-plugin package --push`"
        )
    name = object_name(spec.service, spec.env)
    labels = {
        "app.kubernetes.io/name": spec.service,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "pipeline-plugin.io/env": spec.env,
    }
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace:
        meta["namespace"] = namespace
    variables = {str(k): str(v) for k, v in spec.environment.items()}
    variables["PORT"] = str(settings.RUNTIME_PORT)  # the container port the probes and Service use
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(variables.items())]
    secret_name = f"{name}-scoring-keys"
    if spec.keys:
        env.append({
            "name": "PIPELINE_PLUGIN_SCORING_KEYS",
            "valueFrom": {"secretKeyRef": {"name": secret_name, "key": "keys"}},
        })
    resources: dict[str, Any] = {}
    if spec.cpu_cores or spec.memory_gb:
        amounts = {}
        if spec.cpu_cores:
            amounts["cpu"] = cpu_quantity(spec.cpu_cores)
        if spec.memory_gb:
            amounts["memory"] = memory_quantity(spec.memory_gb)
        resources = {"requests": dict(amounts), "limits": dict(amounts)}
    lo, hi, target_cpu = spec.autoscaler or (spec.replicas, spec.replicas, 70)
    annotations = {
        ANNOTATION + "image": spec.image,
        ANNOTATION + "service": spec.service,
        ANNOTATION + "env": spec.env,
        **{ANNOTATION + "label-" + k.replace("/", "-"): str(v) for k, v in spec.labels.items()},
    }
    probe = {"port": "http", "scheme": "HTTP"}
    container: dict[str, Any] = {
        "name": "model",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": settings.RUNTIME_PORT, "protocol": "TCP"}],
        "env": env,
        # /livez answers while init() loads the model (a slow load is not restarted); /readyz once it succeeded
        "startupProbe": {"httpGet": {"path": "/livez", **probe}, "periodSeconds": 2, "failureThreshold": 90, "timeoutSeconds": 2},
        "livenessProbe": {"httpGet": {"path": "/livez", **probe}, "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz", **probe}, "periodSeconds": 5, "failureThreshold": 2, "timeoutSeconds": 3},
        # let the Service drop the pod from its endpoints before the runtime stops accepting
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if resources:
        container["resources"] = resources
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**meta, "annotations": annotations},
        "spec": {
            # no `replicas`: the HorizontalPodAutoscaler below owns the count (minReplicas..maxReplicas);
            # a replicas field here would scale a busy service back to the minimum on every deploy
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                # the keys' checksum: rotating the scoring keys (a Secret) rolls the pods, which read
                # them at start
                "metadata": {"labels": dict(labels), "annotations": {
                    ANNOTATION + "image": spec.image,
                    ANNOTATION + "keys-sha256": hashlib.sha256("\n".join(spec.keys).encode()).hexdigest(),
                }},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001},
                    "terminationGracePeriodSeconds": _grace_period_s(variables),
                    "containers": [container],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": dict(meta),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/instance": name},
            "ports": [{"name": "http", "port": spec.port or DEFAULT_SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": dict(meta),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": lo,
            "maxReplicas": hi,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target_cpu}}}
            ],
        },
    }
    out = [deployment, service, hpa]
    if with_secret and spec.keys:
        out.insert(0, {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": dict(meta, name=secret_name),
            "type": "Opaque",
            "stringData": {"keys": ",".join(spec.keys)},
        })
    return out


# ---- smoke-test evidence on the Deployment ---------------------------------------------------
SMOKE = ANNOTATION + "smoke-test-"
#: the check's sample and expected output go inline while their JSON is at most this many bytes
#: (Kubernetes allows 256 KiB of annotations per object); larger ones travel as digests only
SMOKE_INLINE_MAX = 16 * 1024


def json_sha256(value: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def smoke_test_annotations(image: str, report: dict[str, Any], passed_at: str, check: dict[str, Any]) -> dict[str, str]:
    """The annotations recording that ``image`` passed the smoke test ``report`` at ``passed_at``;
    ``check`` holds sample, expect, has_expect, tolerance, requests and p99_ms (what promote repeats)."""
    options = {k: check.get(k) for k in ("has_expect", "tolerance", "requests", "p99_ms")}
    inline = {"sample": check.get("sample")}
    if check.get("has_expect"):
        inline["expect"] = check.get("expect")
    if len(json.dumps(inline, separators=(",", ":"))) <= SMOKE_INLINE_MAX:
        options.update(inline)
    out = {
        SMOKE + "image": image,
        SMOKE + "report-sha256": json_sha256(report),
        SMOKE + "passed-at": passed_at,
        SMOKE + "sample-sha256": json_sha256(check.get("sample")),
        SMOKE + "check": json.dumps(options, separators=(",", ":")),
    }
    if check.get("has_expect"):
        out[SMOKE + "expect-sha256"] = json_sha256(check.get("expect"))
    return out


def smoke_test_evidence(annotations: dict[str, str]) -> dict[str, Any] | None:
    """The smoke-test evidence a Deployment's annotations carry (None when there is none):
    ``image``, ``report_sha256``, ``passed_at``, ``sample_sha256``, ``expect_sha256`` and ``check``."""
    if not annotations.get(SMOKE + "image"):
        return None
    try:
        check = json.loads(annotations.get(SMOKE + "check") or "{}")
    except ValueError:
        check = {}
    return {
        "image": annotations[SMOKE + "image"],
        "report_sha256": annotations.get(SMOKE + "report-sha256"),
        "passed_at": annotations.get(SMOKE + "passed-at"),
        "sample_sha256": annotations.get(SMOKE + "sample-sha256"),
        "expect_sha256": annotations.get(SMOKE + "expect-sha256"),
        "check": check if isinstance(check, dict) else {},
    }


URL_ENV = "PIPELINE_PLUGIN_KUBERNETES_URL"


def service_url(name: str, service: str, env: str, namespace: str, port: int) -> str:
    """Where a Service answers: ``PIPELINE_PLUGIN_KUBERNETES_URL`` filled in, else its cluster DNS name."""
    template = os.environ.get(URL_ENV, "").strip()
    if not template:
        return f"http://{name}.{namespace}.svc.cluster.local:{port}"
    try:
        url = template.format(name=name, service=service, env=env, namespace=namespace, port=port)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{URL_ENV}={template!r} is not a usable template ({exc!r}); use the fields {{name}}, "
                          "{service}, {env}, {namespace}, {port}, e.g. https://{name}.models.example.com") from None
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{URL_ENV}={template!r} gives {url!r}; it must start with http:// or https://")
    return url.rstrip("/")


class KubernetesTarget:
    name = "kubernetes"

    def __init__(self, namespace: str | None = None, rollout_timeout: float = ROLLOUT_TIMEOUT_S) -> None:
        self.namespace = namespace or os.environ.get("PIPELINE_PLUGIN_NAMESPACE") or None
        self.rollout_timeout = rollout_timeout
        self._api: Any = None
        self._dynamic: Any = None

    def manifests(self, spec: DeploymentSpec, with_secret: bool = False) -> list[dict[str, Any]]:
        return manifests(spec, self.namespace, with_secret)

    # -- cluster access ----------------------------------------------------------------------
    def api_client(self) -> Any:
        if self._api is not None:
            return self._api
        try:
            from kubernetes import client, config
        except ImportError:
            raise ServiceError(
                "the kubernetes target needs the kubernetes client: pip install 'pipeline-plugin[kubernetes]'"
            ) from None
        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
                config.load_incluster_config()
            else:
                # name the file: the client reads $KUBECONFIG only once, when it is imported
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        except Exception as exc:  # noqa: BLE001 - config.ConfigException and file errors
            raise ServiceError(
                f"no Kubernetes cluster is configured ({exc}); set KUBECONFIG to a kubeconfig file, "
                "or use --dry-run to print the manifests"
            ) from None
        self._api = client.ApiClient()
        return self._api

    def _ns(self) -> str:
        if self.namespace:
            return self.namespace
        in_cluster = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG") and os.path.exists(in_cluster):
            with open(in_cluster) as fh:
                return fh.read().strip() or "default"
        try:
            from kubernetes import config

            _contexts, active = config.list_kube_config_contexts(config_file=os.environ.get("KUBECONFIG") or None)
            return (active or {}).get("context", {}).get("namespace") or "default"
        except Exception:  # noqa: BLE001 - no contexts
            return "default"

    def _resource(self, api_version: str, kind: str) -> Any:
        if self._dynamic is None:
            from kubernetes.dynamic import DynamicClient

            try:
                self._dynamic = DynamicClient(self.api_client())
            except Exception as exc:  # noqa: BLE001 - discovery failed: the cluster does not answer
                raise ServiceError(f"the Kubernetes API does not answer ({exc}); check KUBECONFIG and the cluster") from None
        return self._dynamic.resources.get(api_version=api_version, kind=kind)

    # -- verbs -------------------------------------------------------------------------------
    def create(self, spec: DeploymentSpec, progress: ProgressFn | None = None) -> Deployment:
        return self._apply(spec, progress or _quiet)

    def update(self, spec: DeploymentSpec, progress: ProgressFn | None = None) -> Deployment:
        return self._apply(spec, progress or _quiet)

    def _apply(self, spec: DeploymentSpec, progress: ProgressFn) -> Deployment:
        docs = manifests(spec, None, with_secret=True)
        self.api_client()
        namespace = self._ns()
        for doc in docs:
            doc["metadata"]["namespace"] = namespace
            progress(f"applying {doc['kind']} {namespace}/{doc['metadata']['name']}")
            try:
                self._resource(doc["apiVersion"], doc["kind"]).server_side_apply(
                    body=doc, name=doc["metadata"]["name"], namespace=namespace,
                    field_manager=FIELD_MANAGER, force_conflicts=True,
                )
            except Exception as exc:  # noqa: BLE001 - ApiException and transport errors
                raise ServiceError(f"Kubernetes rejected {doc['kind']} {doc['metadata']['name']}: {getattr(exc, 'reason', exc)}") from None
        name = object_name(spec.service, spec.env)
        self._wait_rollout(name, namespace, progress)
        found = self.get(spec.service, spec.env)
        if found is None:
            raise ServiceError(f"Deployment {namespace}/{name} disappeared right after its rollout")
        return found

    def _wait_rollout(self, name: str, namespace: str, progress: ProgressFn) -> None:
        deployments = self._resource("apps/v1", "Deployment")
        deadline = time.monotonic() + self.rollout_timeout
        last = ""
        while True:
            d = deployments.get(name=name, namespace=namespace).to_dict()
            status, want = d.get("status") or {}, (d.get("spec") or {}).get("replicas", 1)
            done = (
                status.get("observedGeneration", 0) >= d["metadata"].get("generation", 0)
                and status.get("updatedReplicas", 0) == want
                and status.get("availableReplicas", 0) == want
                and not status.get("unavailableReplicas")
                and status.get("replicas", 0) == want
            )
            if done:
                return
            note = f"{status.get('updatedReplicas', 0)}/{want} updated, {status.get('availableReplicas', 0)} available"
            if note != last:
                progress(f"rollout of {name}: {note}")
                last = note
            if time.monotonic() > deadline:
                raise StageFailed(f"rollout of {namespace}/{name} did not finish within {self.rollout_timeout:.0f}s ({note}); "
                                  "the old pods keep serving (maxUnavailable: 0)")
            time.sleep(2)

    def _deployment(self, obj: dict[str, Any], namespace: str) -> Deployment:
        meta = obj["metadata"]
        ann = meta.get("annotations") or {}
        service, env = ann.get(ANNOTATION + "service", ""), ann.get(ANNOTATION + "env", "")
        name = meta["name"]
        port = DEFAULT_SERVICE_PORT
        autoscaler = None
        try:  # what the autoscaler allows: promote hands the same bounds to the next environment
            hpa = self._resource("autoscaling/v2", "HorizontalPodAutoscaler").get(name=name, namespace=namespace).to_dict()
            metric = ((hpa["spec"].get("metrics") or [{}])[0].get("resource") or {}).get("target") or {}
            autoscaler = [hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"], metric.get("averageUtilization", 70)]
        except Exception:  # noqa: BLE001 - no autoscaler (made by hand, or gone)
            pass
        try:
            svc = self._resource("v1", "Service").get(name=name, namespace=namespace).to_dict()
            port = svc["spec"]["ports"][0]["port"]
        except Exception:  # noqa: BLE001 - the Service may be gone
            pass
        status = obj.get("status") or {}
        base = service_url(name, service, env, namespace, port)
        image = obj["spec"]["template"]["spec"]["containers"][0]["image"]
        return Deployment(
            service=service,
            env=env,
            image=ann.get(ANNOTATION + "image", image),
            # the pinned reference (repo@sha256:...): what promote and rollback hand back to a cluster,
            # which pulls by reference (a bare sha256: image id names nothing there)
            image_id=image,
            scoring_uri=f"{base}/score",
            swagger_uri=f"{base}/swagger.json",
            health_uri=f"{base}/",
            status="running" if status.get("availableReplicas") else "failed",
            created_at=meta.get("creationTimestamp"),
            details={"target": self.name, "namespace": namespace, "name": name, "port": port,
                     "replicas": status.get("replicas", 0), "available": status.get("availableReplicas", 0),
                     "autoscaler": autoscaler, "smoke_test": smoke_test_evidence(ann)},
        )

    def annotate_smoke_test(self, dep: Deployment, report: dict[str, Any], passed_at: str, check: dict[str, Any]) -> dict[str, str]:
        """Record on ``dep``'s Deployment that the image it runs passed ``report`` (a JSON merge
        patch of metadata.annotations: the pods are not restarted). Returns the annotations."""
        annotations = smoke_test_annotations(dep.image_id, report, passed_at, check)
        name = object_name(check_name("service", dep.service), check_name("env", dep.env))
        self.api_client()
        namespace = self._ns()
        try:
            self._resource("apps/v1", "Deployment").patch(
                body={"metadata": {"annotations": annotations}}, name=name, namespace=namespace,
                content_type="application/merge-patch+json", field_manager=FIELD_MANAGER + "-smoke-test",
            )
        except Exception as exc:  # noqa: BLE001 - ApiException and transport errors
            raise ServiceError(f"Kubernetes refused the smoke-test annotations on Deployment {namespace}/{name}: "
                               f"{getattr(exc, 'reason', exc)}; the service account needs `patch` on deployments") from None
        return annotations

    def get(self, service: str, env: str) -> Deployment | None:
        name = object_name(check_name("service", service), check_name("env", env))
        self.api_client()
        namespace = self._ns()
        try:
            obj = self._resource("apps/v1", "Deployment").get(name=name, namespace=namespace).to_dict()
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "status", None) == 404:
                return None
            raise ServiceError(f"Kubernetes did not answer for {namespace}/{name}: {getattr(exc, 'reason', exc)}") from None
        return self._deployment(obj, namespace)

    def list(self, service: str | None = None) -> list[Deployment]:
        self.api_client()
        namespace = self._ns()
        selector = f"app.kubernetes.io/managed-by={MANAGED_BY}"
        if service is not None:
            selector += f",app.kubernetes.io/name={check_name('service', service)}"
        items = self._resource("apps/v1", "Deployment").get(namespace=namespace, label_selector=selector).to_dict()
        return [self._deployment(obj, namespace) for obj in items.get("items", [])]

    def delete(self, service: str, env: str) -> None:
        name = object_name(check_name("service", service), check_name("env", env))
        self.api_client()
        namespace = self._ns()
        for api_version, kind, obj_name in (
            ("autoscaling/v2", "HorizontalPodAutoscaler", name),
            ("v1", "Service", name),
            ("apps/v1", "Deployment", name),
            ("v1", "Secret", f"{name}-scoring-keys"),
        ):
            try:
                self._resource(api_version, kind).delete(name=obj_name, namespace=namespace)
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "status", None) != 404:
                    raise ServiceError(f"Kubernetes could not delete {kind} {obj_name}: {getattr(exc, 'reason', exc)}") from None


TARGET = KubernetesTarget()
