"""W&B artifacts through the real ``wandb`` SDK (its Python API and its wandb-core service process)
against a loopback W&B server. W&B publishes no API description (its GraphQL schema is not in its
public repository), so the server parses each query as GraphQL (graphql-core), answers the
operations the SDK sends by name, in the shapes of the SDK's own generated response models (which
the SDK validates), and serves the manifest and the files at the ``directUrl`` s it gave; every
request must carry the API key (``Authorization: Basic base64("api:KEY")``)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline_plugin.errors import ConfigError, NotFoundError, ServiceError
from pipeline_plugin.fetch import fetch
from pipeline_plugin.render import default_install

pytestmark = pytest.mark.timeout(180)  # the SDK retries a failing download with backoff: fail, do not hang

KEY = "k" * 40
ENTITY, PROJECT = "acme", "churn"


def _b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - W&B's manifest digest


class Artifact:
    def __init__(self, aid: str, collection: str, index: int, aliases: list[str], files: dict[str, bytes],
                 served: dict[str, bytes] | None = None, refs: dict[str, tuple[str, bytes]] | None = None) -> None:
        self.id, self.collection, self.index, self.aliases = aid, collection, index, aliases
        self.files = files  # what the manifest lists
        self.served = {**files, **(served or {})}  # what the file URLs answer (a tampered file differs)
        self.refs = refs or {}  # manifest entries that reference a file elsewhere: name -> (ref URI, its bytes)


@contextmanager
def wandb_server(artifacts: list[Artifact], entity: str = ENTITY, project_name: str = PROJECT):
    from graphql import OperationDefinitionNode, parse

    from contract_server import ContractServer, Reply

    server = ContractServer([])
    by_id = {a.id: a for a in artifacts}
    project = {"id": "UHJvamVjdDox", "internalId": "1", "name": project_name, "entity": {"name": entity}}
    server.problems = []

    def authorized(req) -> bool:
        return req.header("Authorization") == "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()

    def find(collection: str, ref: str) -> Artifact | None:
        for a in artifacts:
            if a.collection == collection and (ref == f"v{a.index}" or ref in a.aliases):
                return a
        return None

    def fragment(a: Artifact) -> dict:
        coll = {"__typename": "ArtifactPortfolio", "name": a.collection, "project": project}
        aliases = [{"__typename": "ArtifactAlias", "id": f"QWxpYXM6{a.id}{n}", "alias": n} for n in a.aliases]
        return {"__typename": "Artifact", "id": a.id,
                "artifactSequence": {"__typename": "ArtifactSequence", "name": a.collection, "project": project},
                "versionIndex": a.index, "artifactType": {"name": "model"}, "description": None, "metadata": "{}",
                "ttlDurationSeconds": -1, "ttlIsInherited": True, "tags": [], "historyStep": None,
                "state": "COMMITTED", "size": sum(map(len, a.files.values())), "digest": hashlib.md5(a.id.encode()).hexdigest(),  # noqa: S324
                "commitHash": "c0ffee", "fileCount": len(a.files), "createdAt": "2026-12-01T10:00:00",
                "updatedAt": None, "aliases": [dict(x, artifactCollection=coll) for x in aliases]}

    def membership(a: Artifact) -> dict:
        coll = {"__typename": "ArtifactPortfolio", "name": a.collection, "project": project}
        return {"__typename": "ArtifactCollectionMembership", "id": f"TWVtYmVyc2hpcDo{a.id}", "versionIndex": a.index,
                "createdAt": "2026-12-01T10:00:00", "artifactCollection": coll, "artifact": fragment(a),
                "aliases": [{"__typename": "ArtifactAlias", "id": f"QWxpYXM6{n}", "alias": n} for n in a.aliases]}

    def files(a: Artifact) -> dict:
        return {"pageInfo": {"__typename": "PageInfo", "endCursor": None, "hasNextPage": False},
                "edges": [{"node": {"__typename": "File", "name": name, "directUrl": f"{server.url}/files/{a.id}/{name}"}}
                          for name in sorted({**a.files, **a.refs})]}  # W&B lists reference entries as files too

    viewer = {"id": "VXNlcjox", "name": "CI", "entity": entity, "username": "ci", "email": "ci@example.com",
              "admin": False, "flags": "{}", "deletedAt": None, "apiKeys": {"edges": []}, "teams": {"edges": []}}

    def graphql(req):
        if not authorized(req):
            return Reply(401, {"errors": [{"message": "user is not logged in"}]})
        body = req.body
        try:
            document = parse(body["query"])
        except Exception as exc:  # noqa: BLE001 - the SDK sent no GraphQL: the test fails
            server.problems.append(f"not GraphQL: {exc}")
            return Reply(400, {"errors": [{"message": str(exc)}]})
        ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        op = body.get("operationName") or (ops[0].name.value if ops and ops[0].name else "")
        v = body.get("variables") or {}
        if op in ("Viewer", "GetViewer", "GetDefaultEntity"):
            return Reply(200, {"data": {"viewer": viewer}})
        if op == "FetchOrgInfoFromEntity":  # a registry path (PROJECT wandb-registry-*): the entity's organization
            org = {"name": "Acme", "orgEntity": {"name": entity}} if v["entity"] == entity else None
            return Reply(200, {"data": {"entity": {"organization": org, "user": None} if org else None}})
        if op == "ServerFeaturesQuery":
            return Reply(200, {"data": {"serverInfo": {"features": []}}})
        if op == "ArtifactMembershipByName":
            collection, _, ref = v["name"].partition(":")
            a = find(collection, ref) if (v["entity"], v["project"]) == (entity, project_name) else None
            return Reply(200, {"data": {"project": {"artifactCollectionMembership": membership(a) if a else None}}})
        if op == "ArtifactByID":
            a = by_id.get(v["id"])
            return Reply(200, {"data": {"artifact": fragment(a) if a else None}})
        if op == "FetchArtifactManifest":
            return Reply(200, {"data": {"artifact": {"currentManifest": {"file": {
                "directUrl": f"{server.url}/files/{v['id']}/wandb_manifest.json"}}}}})
        if op == "GetArtifactMembershipFileUrls":
            a = find(v["collection"], v["alias"])
            return Reply(200, {"data": {"project": {"artifactCollection": {
                "__typename": "ArtifactPortfolio", "artifactMembership": {"files": files(a)} if a else None}}}})
        if op == "GetArtifactFileUrls":
            a = by_id[v["id"]]
            return Reply(200, {"data": {"artifact": {"files": files(a)}}})
        server.problems.append(f"unexpected GraphQL operation {op!r}")
        return Reply(400, {"errors": [{"message": f"this test server does not answer {op}"}]})

    def file(req):
        aid, name = re.match(r"^/files/([^/]+)/(.+)$", req.path).groups()
        a = by_id[aid]
        if name == "wandb_manifest.json":
            return Reply(200, {"version": 1, "storagePolicy": "wandb-storage-policy-v1",
                               "storagePolicyConfig": {"storageLayout": "V2"},
                               "contents": {**{n: {"digest": _b64md5(d), "size": len(d)} for n, d in a.files.items()},
                                            **{n: {"digest": _b64md5(d), "size": len(d), "ref": ref}
                                               for n, (ref, d) in a.refs.items()}}})
        return Reply(200, a.served[name], headers={"Content-Type": "application/octet-stream"})

    # the SDK keeps artifacts by id for the whole process, with the file URLs of the server that
    # answered; each test's server is a new W&B holding the same ids, so the process forgets them
    from wandb.sdk.artifacts.artifact_instance_cache import artifact_instance_cache

    artifact_instance_cache.clear()
    server.extra("POST", r"^/graphql$", graphql)
    server.extra("GET", r"^/files/[^/]+/.+$", file)
    server.extra("POST", r"^/sdk/otel/", Reply(200, b""))  # wandb-core's own metrics
    with server:
        yield server


@contextmanager
def serving(w_env, artifacts: list[Artifact]):
    """A W&B server holding ``artifacts``, and this process's WANDB_BASE_URL pointing at it."""
    with wandb_server(artifacts) as server:
        w_env.setenv("WANDB_BASE_URL", server.url)
        yield server


@pytest.fixture
def w_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


V1 = Artifact("QXJ0aWZhY3Q6MTAx", "churn-model", 1, ["production"],
              {"model.pkl": b"pickled-v1", "requirements.txt": b"scikit-learn\n", "conf/settings.json": b"{}"})
V2 = Artifact("QXJ0aWZhY3Q6MTAy", "churn-model", 2, ["latest"], {"model.pkl": b"pickled-v2"})


def test_version_alias_and_id_uris_fetch_the_right_files(tmp_path, w_env):
    with serving(w_env, [V1, V2]) as server:
        got = fetch(f"wandb-artifact://{ENTITY}/{PROJECT}/churn-model:v2", tmp_path / "a")
        assert got.backend == "wandb"
        assert (got.path / "model.pkl").read_bytes() == b"pickled-v2"
        old_form = fetch(f"wandb-artifact:///{ENTITY}/{PROJECT}/churn-model:v2", tmp_path / "old")  # earlier events
        assert (old_form.path / "model.pkl").read_bytes() == b"pickled-v2"
        by_alias = fetch(f"wandb-artifact://{ENTITY}/{PROJECT}/churn-model:production", tmp_path / "b")
        assert (by_alias.path / "model.pkl").read_bytes() == b"pickled-v1"
        assert (by_alias.path / "conf" / "settings.json").read_bytes() == b"{}"
        assert by_alias.requirements == by_alias.path / "requirements.txt"  # the model's own dependencies
        by_id = fetch(f"wandb-artifact://_id/{V2.id}", tmp_path / "c")  # ${artifact_version}
        assert (by_id.path / "model.pkl").read_bytes() == b"pickled-v2"
        assert not server.problems, server.problems
        server.assert_clean()


def test_a_file_that_differs_from_the_manifest_is_not_deployed(tmp_path, w_env):
    tampered = Artifact("QXJ0aWZhY3Q6MTAz", "churn-model", 3, [], {"model.pkl": b"genuine"},
                        served={"model.pkl": b"swapped"})
    with serving(w_env, [tampered]), pytest.raises(ServiceError, match=r"model\.pkl has MD5 .*manifest says"):
        fetch(f"wandb-artifact://{ENTITY}/{PROJECT}/churn-model:v3", tmp_path / "a")


def test_a_reference_to_a_file_on_the_fetching_machine_is_refused_unless_allowed(tmp_path, w_env):
    """Whoever can log artifacts could list the fetching machine's files (a CI runner's keys) in a
    manifest, with their digest: the SDK would copy them into the model, and so into the image."""
    secret_dir = tmp_path / "runner-home"
    secret_dir.mkdir()
    secret = secret_dir / "id_ed25519"
    secret.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    planted = Artifact("QXJ0aWZhY3Q6MTA0", "churn-model", 4, [], {"model.pkl": b"pickled-v4"},
                       refs={"extra/key": (secret.as_uri(), secret.read_bytes())})
    with serving(w_env, [planted]):
        uri = f"wandb-artifact://{ENTITY}/{PROJECT}/churn-model:v4"
        for roots in (None, []):  # a CI job's `package` (no roots), the listener with none configured
            with pytest.raises(ConfigError) as err:
                fetch(uri, tmp_path / f"refused-{roots}", allowed_roots=roots)
            assert "extra/key" in str(err.value) and secret.as_uri() in str(err.value), err.value
            assert not list((tmp_path / f"refused-{roots}").rglob("key")), "the file was copied before the refusal"
        with pytest.raises(ConfigError, match="not below an allowed root"):
            fetch(uri, tmp_path / "elsewhere", allowed_roots=[tmp_path / "models"])
        allowed = fetch(uri, tmp_path / "allowed", allowed_roots=[secret_dir])  # a shared folder the config lists
        assert (allowed.path / "extra" / "key").read_bytes() == secret.read_bytes()
        assert (allowed.path / "model.pkl").read_bytes() == b"pickled-v4"


def test_missing_version_and_bad_key_are_named(tmp_path, w_env):
    with serving(w_env, [V1]):
        with pytest.raises(NotFoundError, match=r"churn-model:v9"):
            fetch(f"wandb-artifact://{ENTITY}/{PROJECT}/churn-model:v9", tmp_path / "a")
        with pytest.raises(NotFoundError, match=r"no artifact with this id"):
            fetch("wandb-artifact://_id/QXJ0aWZhY3Q6OTk5", tmp_path / "b")
        w_env.setenv("WANDB_API_KEY", "x" * 40)
        with pytest.raises(ConfigError, match=r"WANDB_API_KEY"):
            fetch(f"wandb-artifact://{ENTITY}/{PROJECT}/churn-model:v1", tmp_path / "c")


def test_a_server_named_in_the_uri_is_not_trusted(tmp_path, w_env):
    """The API key goes to WANDB_BASE_URL only; an event cannot point the job at another host."""
    with serving(w_env, [V1]) as server:
        with pytest.raises(ConfigError, match=r"names the W&B server https://evil\.example.*WANDB_BASE_URL"):
            fetch(f"wandb-artifact://https://evil.example/{ENTITY}/{PROJECT}/churn-model:v1", tmp_path / "a")
        assert server.requests == []  # nothing was asked of anyone
        got = fetch(f"wandb-artifact://{server.url}/_id/{V1.id}", tmp_path / "b")  # the configured server itself
        assert (got.path / "model.pkl").read_bytes() == b"pickled-v1"
    with pytest.raises(ConfigError, match=r"name the version"):
        fetch(f"wandb-artifact://{ENTITY}/{PROJECT}/churn-model", tmp_path / "c")


def test_jobs_for_wandb_and_databricks_events_install_their_registry_client():
    assert "wandb" in default_install("docker", "wandb").split("[")[1]
    assert "mlflow" in default_install("docker", "databricks").split("[")[1]  # models:/ URIs via MLflow's client


def test_a_wandb_delivery_becomes_a_build_context_in_a_fresh_job(tmp_path, w_env):
    """The URIs the wandb source records from W&B's documented payload (the artifact id, and the
    version string when the template leaves ``${artifact_version}`` out) are what a fresh CI job's
    ``package`` fetches: its own process, empty HOME, only WANDB_API_KEY and WANDB_BASE_URL."""
    from pipeline_plugin.sources import Headers, Request, get_source

    def delivery(body: dict) -> Request:
        return Request(method="POST", path="/webhooks/wandb", headers=Headers({"Content-Type": "application/json"}),
                       body=json.dumps(body).encode())

    source = get_source("wandb")
    sample = json.loads((Path(__file__).parents[1] / "sources" / "samples" / "wandb"
                         / "01_link_artifact_suggested_template.json").read_text())
    body = sample.get("request", sample)["body"]
    [by_id] = source.parse(delivery(body))
    [by_name] = source.parse(delivery({k: v for k, v in body.items() if k != "artifact_version"}))
    assert by_id.artifact_uri.startswith("wandb-artifact://_id/")
    assert by_name.artifact_uri == f"wandb-artifact://{body['artifact_version_string']}"
    v3 = Artifact(by_id.artifact_uri.rsplit("/", 1)[1], by_id.model, 3, ["production"], {"model.pkl": b"fraud-v3"})
    score = tmp_path / "score.py"
    score.write_text("def init():\n    pass\n\n\ndef run(data):\n    return data\n")
    with wandb_server([v3], entity=by_id.registry["entity"], project_name=by_id.registry["project"]) as server:
        for n, event in enumerate((by_id, by_name)):
            out = tmp_path / f"context-{n}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
            env.update(HOME=str(tmp_path / f"home-{n}"), WANDB_API_KEY=KEY, WANDB_BASE_URL=server.url)
            proc = subprocess.run(
                [sys.executable, "-m", "pipeline_plugin.cli", "package", "--model",
                 f"{event.model}:{event.version}={event.artifact_uri}", "--entry-script", str(score),
                 "--image", "fraud/detector:3", "--generate-dockerfile", str(out), "--json"],
                env=env, capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
            result = json.loads(proc.stdout)  # --json: wandb's progress lines stay off stdout
            assert result["model_digest"].startswith("sha256:")
            copied = list((out / "models").rglob("model.pkl"))
            assert [p.read_bytes() for p in copied] == [b"fraud-v3"], event.artifact_uri
        assert not server.problems, server.problems
        server.assert_clean()


def test_a_server_that_does_not_answer_is_a_service_error(tmp_path, w_env, monkeypatch):
    """Exit 3 (try again), not a configuration error: nothing is wrong with the key."""
    import socket

    from pipeline_plugin.fetch import wandb as wandb_fetch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    w_env.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(wandb_fetch, "TIMEOUT", 3)
    with pytest.raises(ServiceError, match=r"does not answer"):
        fetch(f"wandb-artifact://{ENTITY}/{PROJECT}/churn-model:v1", tmp_path / "a")
