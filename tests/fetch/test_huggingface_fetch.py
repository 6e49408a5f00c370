"""Hugging Face Hub repositories through huggingface_hub against a loopback server that answers as the
Hub's documented API does (no Hub description in ../shared/contracts): ``GET /api/models/{repo}/revision/{rev}``
(the commit sha and the file list), ``GET /api/models/{repo}/tree/{sha}?recursive=true`` (paths and sizes), then ``HEAD``/``GET /{repo}/resolve/{sha}/{file}`` with
X-Repo-Commit, ETag and Content-Length; HF_ENDPOINT and HF_TOKEN honoured."""

from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager

import pytest

from pipeline_plugin.errors import ConfigError, NotFoundError
from pipeline_plugin.fetch import fetch

TOKEN = "hf_fetch_test_token"
SHA_MAIN, SHA_V1 = "a" * 40, "b" * 40


@contextmanager
def hub(repos: dict[str, dict[str, dict[str, bytes]]], refs: dict[str, dict[str, str]]):
    """repos: repo -> sha -> files; refs: repo -> ref name -> sha. Private: the token is required."""
    from contract_server import ContractServer, Reply

    server = ContractServer([])

    def authorized(req):
        return req.header("Authorization") == f"Bearer {TOKEN}"

    def not_found(kind):
        return Reply(404 if kind == "repo" else 404, {"error": f"{kind} not found"},
                     headers={"X-Error-Code": "RepoNotFound" if kind == "repo" else "RevisionNotFound"})

    def revision(req):
        repo, rev = re.match(r"^/api/models/([^/]+/[^/]+)/revision/(.+)$", req.path).groups()
        if not authorized(req) or repo not in repos:
            return Reply(401, {"error": "Repository not found"}, headers={"X-Error-Code": "RepoNotFound"})
        sha = refs[repo].get(rev) or (rev if rev in repos[repo] else None)
        if sha is None:
            return not_found("revision")
        return Reply(200, {"id": repo, "modelId": repo, "sha": sha, "private": True,
                           "siblings": [{"rfilename": f} for f in sorted(repos[repo][sha])]})

    def resolve(req):
        repo, rev, name = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", req.path).groups()
        if not authorized(req) or repo not in repos:
            return Reply(401, {"error": "Repository not found"}, headers={"X-Error-Code": "RepoNotFound"})
        sha = refs[repo].get(rev) or rev
        data = repos[repo].get(sha, {}).get(name)
        if data is None:
            return Reply(404, {"error": "Entry not found"}, headers={"X-Error-Code": "EntryNotFound"})
        return Reply(200, data, headers={"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                                         "Content-Type": "application/octet-stream"})

    def tree(req):
        repo, rev = re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)/?$", req.path).groups()
        if not authorized(req) or repo not in repos:
            return Reply(401, {"error": "Repository not found"}, headers={"X-Error-Code": "RepoNotFound"})
        files = repos[repo].get(refs[repo].get(rev) or rev)
        if files is None:
            return not_found("revision")
        dirs = sorted({name.rsplit("/", 1)[0] for name in files if "/" in name})
        return Reply(200, [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in dirs]
                     + [{"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": name}
                        for name, data in sorted(files.items())])

    # the client's best-effort, once-a-day read of the Hub's agent-harness list (user agent detection)
    server.extra("GET", r"^/api/agent-harnesses$", Reply(200, {"standardEnvVars": [], "harnesses": {}}))
    server.extra("GET", r"^/api/models/[^/]+/[^/]+/revision/.+$", revision)
    server.extra("GET", r"^/api/models/[^/]+/[^/]+/tree/[^/]+/?$", tree)
    for method in ("HEAD", "GET"):
        server.extra(method, r"^/[^/]+/[^/]+/resolve/[^/]+/.+$", resolve)
    with server:
        yield server


def test_hub_repositories_at_main_and_at_a_revision(tmp_path, monkeypatch):
    repos = {"acme/churn": {
        SHA_MAIN: {"model.onnx": b"onnx-main", "requirements.txt": b"onnxruntime\n", "config/settings.json": b"{}"},
        SHA_V1: {"model.onnx": b"onnx-v1"},
    }}
    with hub(repos, {"acme/churn": {"main": SHA_MAIN, "v1": SHA_V1}}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        got = fetch("hf://acme/churn", tmp_path / "main")
        assert got.backend == "huggingface" and got.path == tmp_path / "main" / "model"
        assert (got.path / "model.onnx").read_bytes() == b"onnx-main"
        assert (got.path / "config" / "settings.json").read_bytes() == b"{}"
        assert got.requirements == got.path / "requirements.txt" and not (got.path / ".cache").exists()
        v1 = fetch("hf://acme/churn@v1", tmp_path / "v1")
        assert (v1.path / "model.onnx").read_bytes() == b"onnx-v1" and v1.requirements is None
        by_sha = fetch(f"hf://acme/churn@{SHA_V1}", tmp_path / "sha")
        assert (by_sha.path / "model.onnx").read_bytes() == b"onnx-v1"
        with pytest.raises(NotFoundError, match="hf://acme/churn@v9"):
            fetch("hf://acme/churn@v9", tmp_path / "v9")
        assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in server.requests
                   if r.path.startswith(("/api/models/", "/acme/")))
        server.assert_clean()


def test_a_bad_hub_uri_names_the_form(tmp_path):
    with pytest.raises(ConfigError, match=r"expected hf://OWNER/REPO or hf://OWNER/REPO@REVISION"):
        fetch("hf://acme/churn/extra/parts", tmp_path / "x")
