"""deploy/kubernetes/: valid against the Kubernetes schemas (kubernetes-validate, strict, offline)
and consistent with what the listener and its image really are: the args parse as `serve` flags,
probes hit /healthz on the port the image listens on, the Service and the Ingress reach it, the
secrets feed the variables the listener reads, the pod runs as the image's non-root user, and the
grace period covers the bounded shutdown."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pipeline_plugin import cli, sources
from pipeline_plugin.builders import listener_image
from pipeline_plugin.commands.serve import SHUTDOWN_TIMEOUT_ENV

K8S_VERSION = "1.30.0"
FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def load() -> list[dict]:
    docs = []
    for path in sorted(FOLDER.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, found)
    return found[0]


def test_every_manifest_is_valid_for_kubernetes_strictly():
    docs = load()
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "Ingress", "Secret", "ConfigMap"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_typo_in_a_manifest_is_caught_by_the_strict_schema():
    dep = one(load(), "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_the_deployment_runs_n_replicas_of_the_listener_as_the_images_non_root_user_on_postgresql():
    docs = load()
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert dep["spec"]["replicas"] >= 2
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    # the container's args are real `serve` flags after the image's entrypoint
    entry = listener_image.ENTRYPOINT
    assert entry[:2] == ["pipeline-plugin", "serve"]
    args = cli.build_parser().parse_args(entry[1:] + c["args"])
    assert args.func.__module__ == "pipeline_plugin.commands.serve" and args.host == "0.0.0.0"
    port = args.port
    assert {"name": "http", "containerPort": port, "protocol": "TCP"} in c["ports"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    # the triggers folder the args name is the ConfigMap's mount
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[str(args.triggers)]]["configMap"]["name"] == one(docs, "ConfigMap")["metadata"]["name"]
    # the state dir and /tmp are writable volumes (the root filesystem is read-only)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert "emptyDir" in volumes[mounts[listener_image.STATE_DIR]] and "emptyDir" in volumes[mounts["/tmp"]]
    # non-root, the image's uid
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == listener_image.UID != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"]["requests"] and c["resources"]["limits"]
    # PostgreSQL from a Secret, the webhook secrets from another
    env = {e["name"]: e for e in c["env"]}
    ref = env["PIPELINE_PLUGIN_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    db_secret = one(docs, "Secret", ref["name"])
    assert db_secret["stringData"][ref["key"]].startswith("postgresql://")
    (from_secret,) = c["envFrom"]
    hooks = one(docs, "Secret", from_secret["secretRef"]["name"])
    assert hooks["stringData"] and set(hooks["stringData"]) <= {sources.secret_env_var(n) for n in sources.BACKENDS}
    # the grace period covers preStop + the bounded shutdown (open requests, then the worker)
    shutdown_s = int(env[SHUTDOWN_TIMEOUT_ENV]["value"]) / 1000
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + 2 * shutdown_s


def test_the_service_and_the_ingress_reach_the_listener_over_https():
    docs = load()
    dep, svc, ing = one(docs, "Deployment"), one(docs, "Service"), one(docs, "Ingress")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["targetPort"] == "http"
    (rule,) = ing["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/webhooks/" and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": svc["metadata"]["name"], "port": {"name": svc_port["name"]}}
    (tls,) = ing["spec"]["tls"]
    assert rule["host"] in tls["hosts"] and tls["secretName"]
