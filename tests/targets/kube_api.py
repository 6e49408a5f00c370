"""A small in-memory stand-in for the Kubernetes API server (no cluster can run on this machine).

It serves what the kubernetes Python client's dynamic client needs: ``/version``, discovery
(``/apis``, ``/api/v1``, ``/apis/apps/v1``, ``/apis/autoscaling/v2``), server-side apply (PATCH with
``application/apply-patch+yaml``, ``fieldManager`` required), JSON merge patch of an existing object
(``application/merge-patch+json``; annotations set that way are another manager's, so a later apply
that does not name them keeps them, as a real API server does), get, list with ``labelSelector``, and
delete, for Deployments, Services, HorizontalPodAutoscalers and Secrets. Every applied object is
validated against the Kubernetes schemas (kubernetes-validate, strict); a violation is answered 422
and recorded. A Deployment reports its rollout as in progress on the first read after an apply and
complete on the next, so callers must wait for it.
"""

from __future__ import annotations

import copy
import json
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate

K8S_VERSION = "1.30.0"
KINDS = {
    # (prefix, group/version, plural): kind
    ("api", "v1", "services"): "Service",
    ("api", "v1", "secrets"): "Secret",
    ("apis", "apps/v1", "deployments"): "Deployment",
    ("apis", "autoscaling/v2", "horizontalpodautoscalers"): "HorizontalPodAutoscaler",
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def _resource_list(group_version: str) -> dict:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {"name": plural, "singularName": kind.lower(), "namespaced": True, "kind": kind, "verbs": VERBS}
            for (_p, gv, plural), kind in KINDS.items()
            if gv == group_version
        ],
    }


class KubeAPI:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}  # (plural, namespace, name) -> object
        self.applies: list[dict] = []  # every apply: path, query, content type, body
        self.violations: list[str] = []
        self.pending_rollouts: set[tuple[str, str]] = set()
        self.merge_patches: list[dict] = []  # every merge patch: path, query, body
        #: (plural, namespace, name) -> annotations a merge patch set (owned by another field manager)
        self.patched_annotations: dict[tuple[str, str, str], dict[str, str]] = {}
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                api.handle(self, "GET")

            def do_PATCH(self):
                api.handle(self, "PATCH")

            def do_DELETE(self):
                api.handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "KubeAPI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, namespace: str) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "test-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
        })

    @staticmethod
    def status(code: int, reason: str, message: str) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code}

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        query = parse_qs(url.query)
        parts = [p for p in url.path.split("/") if p]
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method == "PATCH" else b""
        if method == "GET" and url.path == "/version":
            return h.reply(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0"})
        if method == "GET" and url.path == "/apis":
            return h.reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                 "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
                for g, v in (("apps", "v1"), ("autoscaling", "v2"))
            ]})
        if method == "GET" and url.path == "/api":
            return h.reply(200, {"kind": "APIVersions", "versions": ["v1"]})
        if method == "GET" and url.path in ("/api/v1", "/apis/apps/v1", "/apis/autoscaling/v2"):
            return h.reply(200, _resource_list(url.path.split("/", 2)[2]))
        # /api/v1/namespaces/NS/PLURAL[/NAME] or /apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME]
        prefix = parts[0] if parts else ""
        gv_len = 1 if prefix == "api" else 2
        rest = parts[1 + gv_len:]
        gv = "/".join(parts[1:1 + gv_len])
        if len(rest) < 3 or rest[0] != "namespaces" or (prefix, gv, rest[2]) not in KINDS:
            return h.reply(404, self.status(404, "NotFound", f"no route {method} {url.path}"))
        namespace, plural = rest[1], rest[2]
        name = rest[3] if len(rest) > 3 else None
        kind = KINDS[(prefix, gv, plural)]
        with self.lock:
            if method == "GET" and name is None:
                selector = dict(s.split("=", 1) for s in query.get("labelSelector", [""])[0].split(",") if "=" in s)
                items = [o for (p, ns, _n), o in self.objects.items() if p == plural and ns == namespace
                         and all(o["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
                return h.reply(200, {"kind": f"{kind}List", "apiVersion": gv, "metadata": {}, "items": items})
            key = (plural, namespace, name)
            if method == "GET":
                if key not in self.objects:
                    return h.reply(404, self.status(404, "NotFound", f"{plural} {name!r} not found"))
                obj = self.objects[key]
                if kind == "Deployment":
                    self._advance_rollout(key, obj)
                return h.reply(200, obj)
            if method == "DELETE":
                if self.objects.pop(key, None) is None:
                    return h.reply(404, self.status(404, "NotFound", f"{plural} {name!r} not found"))
                return h.reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
            ctype = h.headers.get("Content-Type", "")
            if ctype == "application/merge-patch+json":
                return self._merge_patch(h, key, kind, url, query, body)
            # PATCH: server-side apply
            self.applies.append({"path": url.path, "query": query, "content_type": ctype, "body": body.decode()})
            problems = []
            if ctype != "application/apply-patch+yaml":
                problems.append(f"content type {ctype!r} is not server-side apply")
            if not query.get("fieldManager"):
                problems.append("server-side apply needs fieldManager")
            try:
                obj = json.loads(body)
            except ValueError:
                obj = {}
                problems.append("body is not JSON")
            if obj.get("kind") != kind or obj.get("metadata", {}).get("name") != name:
                problems.append(f"body kind/name {obj.get('kind')}/{obj.get('metadata', {}).get('name')} != {kind}/{name}")
            if obj.get("metadata", {}).get("namespace") not in (None, namespace):
                problems.append("body namespace differs from the path")
            try:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            except Exception as exc:  # noqa: BLE001 - ValidationError and friends
                problems.append(f"schema: {exc}")
            if problems:
                self.violations.extend(problems)
                return h.reply(422, self.status(422, "Invalid", "; ".join(problems)))
            old = self.objects.get(key)
            meta = obj["metadata"]
            meta["namespace"] = namespace
            meta["generation"] = (old["metadata"]["generation"] + 1) if old else 1
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"] if old else datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            kept = {k: v for k, v in self.patched_annotations.get(key, {}).items() if k not in (meta.get("annotations") or {})}
            if kept:
                meta["annotations"] = {**(meta.get("annotations") or {}), **kept}
            if kind == "Deployment":
                obj["status"] = dict((old or {}).get("status") or {}, updatedReplicas=0)
                self.pending_rollouts.add(key)
            self.objects[key] = obj
            return h.reply(200, obj)

    def _merge_patch(self, h, key, kind, url, query, body: bytes):
        """RFC 7386 merge patch of an existing object (the caller holds the lock); metadata-only
        changes do not start a rollout."""
        self.merge_patches.append({"path": url.path, "query": query, "body": body.decode()})
        if key not in self.objects:
            return h.reply(404, self.status(404, "NotFound", f"{key[0]} {key[2]!r} not found"))
        try:
            patch = json.loads(body)
        except ValueError:
            self.violations.append("merge patch body is not JSON")
            return h.reply(400, self.status(400, "BadRequest", "merge patch body is not JSON"))

        def merge(target, change):
            if not isinstance(change, dict):
                return change
            out = dict(target) if isinstance(target, dict) else {}
            for k, v in change.items():
                if v is None:
                    out.pop(k, None)
                else:
                    out[k] = merge(out.get(k), v)
            return out

        old = self.objects[key]
        new = merge(copy.deepcopy(old), patch)
        checked = {k: v for k, v in new.items() if k != "status"}
        checked["metadata"] = {k: v for k, v in new["metadata"].items() if k not in ("generation", "creationTimestamp", "namespace")}
        try:
            kubernetes_validate.validate(checked, K8S_VERSION, strict=True)
        except Exception as exc:  # noqa: BLE001 - ValidationError and friends
            self.violations.append(f"schema: {exc}")
            return h.reply(422, self.status(422, "Invalid", f"schema: {exc}"))
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            if kind == "Deployment":
                self.pending_rollouts.add(key)
        owned = self.patched_annotations.setdefault(key, {})
        for k, v in ((patch.get("metadata") or {}).get("annotations") or {}).items():
            if v is None:
                owned.pop(k, None)
            else:
                owned[k] = v
        self.objects[key] = new
        return h.reply(200, new)

    def _advance_rollout(self, key, obj) -> None:
        """First read after an apply: in progress; the read after that: complete."""
        replicas = obj["spec"].get("replicas", 1)
        if key in self.pending_rollouts:
            self.pending_rollouts.discard(key)
            obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "replicas": replicas + 1,
                             "updatedReplicas": 1, "availableReplicas": replicas, "unavailableReplicas": 1}
        else:
            obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "replicas": replicas,
                             "updatedReplicas": replicas, "availableReplicas": replicas, "readyReplicas": replicas}
