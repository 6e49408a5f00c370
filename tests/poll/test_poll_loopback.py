"""Polling Azure ML (the ARM model and model-version list APIs, paged by nextLink) and the Hugging Face
Hub (refs and commits through huggingface_hub) against loopback servers (tests/contract_server.py)
that answer as those documented APIs do; a version announced by the source's webhook and listed by
the poller is one event; bad poll settings are refused naming the field."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

from pipeline_plugin.cli import main
from pipeline_plugin.errors import ConfigError
from pipeline_plugin.inbox import Inbox
from pipeline_plugin.poll import config_section
from pipeline_plugin.sources import Request
from pipeline_plugin.sources.azureml import SOURCE as AZUREML
from pipeline_plugin.sources.huggingface import SOURCE as HUB

ARM_TOKEN, HF_TOKEN = "arm-token-poll", "hf_poll_token"
WS_PATH = "/subscriptions/sub-1/resourceGroups/rg-ml/providers/Microsoft.MachineLearningServices/workspaces/ws-prod"
WS = re.escape(WS_PATH)


def poll(capsys, state, source, *args):
    capsys.readouterr()
    code = main(["poll", "--source", source, "--once", "--json", "--state-dir", str(state), *args])
    out = capsys.readouterr()
    return code, json.loads(out.out)["sources"][source], out.err


# ---- Azure ML -------------------------------------------------------------------------------------
@contextmanager
def azure(models: dict[str, list[dict]], ws_path: str = WS_PATH):
    """ARM: list models and list a model's versions, two per page (nextLink with $skipToken), of the
    workspace ``ws_path``."""
    from contract_server import ContractServer, Reply

    server = ContractServer([])
    WS_PATH, WS = ws_path, re.escape(ws_path)  # noqa: N806 - this server's workspace

    def page(req, items, base):
        if req.header("Authorization") != f"Bearer {ARM_TOKEN}":
            return Reply(401, {"error": {"code": "AuthenticationFailed", "message": "bad token"}})
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", (req.query.get("api-version") or [""])[0]):
            return Reply(400, {"error": {"code": "MissingApiVersionParameter", "message": "api-version"}})
        skip = int((req.query.get("$skipToken") or ["0"])[0])
        body: dict = {"value": items[skip:skip + 2]}
        if skip + 2 < len(items):
            body["nextLink"] = f"{server.url}{base}?api-version=2024-04-01&$skipToken={skip + 2}"
        return Reply(200, body)

    def list_models(req):
        return page(req, [{"id": f"{WS_PATH}/models/{n}", "name": n, "properties": {}} for n in sorted(models)],
                    f"{WS_PATH}/models")

    def list_versions(req):
        name = re.search(r"/models/([^/]+)/versions$", req.path).group(1)
        return page(req, models.get(name, []), f"{WS_PATH}/models/{name}/versions")

    server.extra("GET", WS + r"/models$", list_models)
    server.extra("GET", WS + r"/models/[^/]+/versions$", list_versions)
    with server:
        yield server


def version(name: str, v: str, archived: bool = False) -> dict:
    return {"id": f"{WS_PATH}/models/{name}/versions/{v}", "name": v, "type": "Microsoft.MachineLearningServices/"
            "workspaces/models/versions", "systemData": {"createdAt": f"2026-12-0{v}T10:00:00Z"},
            "properties": {"modelUri": f"azureml://datastores/workspaceblobstore/paths/{name}/{v}/",
                           "isArchived": archived, "tags": {"owner": "risk"}, "modelType": "custom_model"}}


def test_azureml_model_versions(tmp_path, capsys, monkeypatch):
    models = {"credit": [version("credit", str(v)) for v in range(1, 4)] + [version("credit", "4", archived=True)],
              "fraud": [version("fraud", "1")]}
    options = ["--option", "subscription=sub-1", "--option", "resource_group=rg-ml", "--option", "workspace=ws-prod"]
    state = tmp_path / "state"
    # Event Grid announced credit version 2 before anything was polled
    body = json.dumps([{"id": "eg-2", "topic": WS_PATH, "subject": "models/credit:2",
                        "eventType": "Microsoft.MachineLearningServices.ModelRegistered",
                        "eventTime": "2026-12-02T10:00:00Z", "dataVersion": "2",
                        "data": {"modelName": "credit", "modelVersion": "2", "modelTags": {}}}]).encode()
    assert Inbox(state).put("azureml", AZUREML.parse(Request("POST", "/webhooks/azureml", {}, body))).duplicate is False
    with azure(models) as server:
        monkeypatch.setenv("AZURE_RESOURCE_MANAGER_URL", server.url)
        monkeypatch.setenv("AZURE_ACCESS_TOKEN", ARM_TOKEN)
        # `since`: the versions Azure ML dates earlier (systemData.createdAt) are not announced
        code, counts, err = poll(capsys, tmp_path / "since", "azureml", *options, "--option", "since=2026-12-03T00:00:00Z")
        assert code == 0, err
        assert (counts["seen"], counts["new"], counts["skipped"]) == (4, 1, 3)
        assert [(e.event.model, e.event.version) for e in Inbox(tmp_path / "since").list()] == [("credit", "3")]

        code, counts, err = poll(capsys, state, "azureml", *options)
        assert code == 0, err
        # the first poll of this workspace is a baseline: what it holds starts no pipeline (Event Grid's v2 is
        # stored already: a duplicate); archived v4 left out
        assert (counts["seen"], counts["new"], counts["baseline"], counts["duplicate"]) == (4, 0, 3, 1)
        assert {e.event.version: e.status for e in Inbox(state).list() if e.event.model == "credit"} == {
            "1": "ignored", "2": "pending", "3": "ignored"}
        events = {(e.event.model, e.event.version): e.event for e in Inbox(state).list()}
        assert sorted(events) == [("credit", "1"), ("credit", "2"), ("credit", "3"), ("fraud", "1")]
        assert events[("credit", "2")].delivery_id == "eg-2"
        polled = events[("credit", "3")]
        assert polled.kind == "model_version.created" and polled.tags["owner"] == "risk"
        assert polled.artifact_uri == ("azureml://subscriptions/sub-1/resourceGroups/rg-ml/workspaces/ws-prod/models/"
                                       "credit/versions/3")
        # a new version while nobody polled, then a listed model only
        models["credit"].append(version("credit", "5"))
        code, counts, err = poll(capsys, state, "azureml", *options, "--option", "models=[credit]")
        assert (counts["seen"], counts["new"], counts["baseline"]) == (4, 1, 0)
        assert Inbox(state).list()[-1].event.version == "5" and Inbox(state).list()[-1].status == "pending"
        # with `since` the later version is announced, the earlier dated ones still skipped
        code, counts, err = poll(capsys, tmp_path / "since", "azureml", *options, "--option", "since=2026-12-03T00:00:00Z")
        assert (counts["seen"], counts["new"], counts["skipped"], counts["duplicate"]) == (5, 1, 3, 1)
        assert [e.event.version for e in Inbox(tmp_path / "since").list()] == ["3", "5"]
        assert all(r.header("Authorization") == f"Bearer {ARM_TOKEN}" for r in server.requests)
        monkeypatch.setenv("AZURE_ACCESS_TOKEN", "expired-secret")
        code, counts, err = poll(capsys, state, "azureml", *options)
        assert code == 3 and "401" in counts["error"] and "expired-secret" not in counts["error"]


def test_workspaces_of_one_name_have_their_own_poll_state(tmp_path, capsys, monkeypatch):
    """Azure ML is keyed by the workspace's ARM path in the poll state: a workspace named like one
    polled before, in another resource group, gets its own baseline. A state an older release kept
    under the workspace's name is taken over by the first workspace polled, and only by it."""
    from pipeline_plugin.poll.azureml import AzureMLPoller
    from pipeline_plugin.poll.baseline import record_baseline, state_for

    state = tmp_path / "state"
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", ARM_TOKEN)
    legacy = state_for(Inbox(state))
    options = ["--option", "subscription=sub-1", "--option", "workspace=ws-prod"]
    models = {"credit": [version("credit", "1")]}
    with azure(models) as server:
        monkeypatch.setenv("AZURE_RESOURCE_MANAGER_URL", server.url)
        # what the older release left: its first poll's baseline, its state under the workspace's name
        at = "2026-12-01T00:00:00+00:00"
        listed = list(AzureMLPoller("sub-1", "rg-ml", "ws-prod", None).list_versions())
        assert record_baseline(legacy, "azureml", listed, at, {"scheme": "poll"}) == 1
        legacy.mark("azureml", "Azure ML workspace ws-prod", at, "baseline", 1, None)
        models["credit"].append(version("credit", "2"))
        code, counts, err = poll(capsys, state, "azureml", *options, "--option", "resource_group=rg-ml")
        assert code == 0, err
        assert (counts["new"], counts["baseline"], counts["duplicate"]) == (1, 0, 1)  # polled before: v2 is new
    assert legacy.get("azureml", "Azure ML workspace ws-prod") is None
    assert legacy.get("azureml", f"Azure ML workspace {WS_PATH}")["models"] == "all"
    other = WS_PATH.replace("/rg-ml/", "/rg-other/")
    with azure({"fraud": [version("fraud", "1")]}, other) as server:
        monkeypatch.setenv("AZURE_RESOURCE_MANAGER_URL", server.url)
        code, counts, err = poll(capsys, state, "azureml", *options, "--option", "resource_group=rg-other")
        assert code == 0, err
        assert (counts["new"], counts["baseline"]) == (0, 1), err  # its first poll: a baseline
        assert f"first poll of Azure ML workspace {other}: 1 existing version(s) recorded as baseline" in err
    assert {(e.event.model, e.event.version, e.status) for e in Inbox(state).list()} == {
        ("credit", "1", "ignored"), ("credit", "2", "pending"), ("fraud", "1", "ignored")}


# ---- the Hub -----------------------------------------------------------------------------------------
@contextmanager
def hub(refs: dict[str, dict], commits: dict[str, list[str]]):
    """``GET /api/models/{repo}/refs`` and ``/commits/{rev}`` (paged by Link, two per page); private."""
    from contract_server import ContractServer, Reply

    server = ContractServer([])

    def authorized(req):
        return req.header("Authorization") == f"Bearer {HF_TOKEN}"

    def list_refs(req):
        repo = re.match(r"^/api/models/([^/]+/[^/]+)/refs$", req.path).group(1)
        if not authorized(req) or repo not in refs:
            return Reply(401, {"error": "Repository not found"}, headers={"X-Error-Code": "RepoNotFound"})
        info = refs[repo]
        return Reply(200, {
            "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha} for b, sha in info["branches"].items()],
            "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": sha} for t, sha in info["tags"].items()],
            "converts": []})

    def list_commits(req):
        repo, rev = re.match(r"^/api/models/([^/]+/[^/]+)/commits/([^/]+)$", req.path).groups()
        if not authorized(req) or repo not in refs:
            return Reply(401, {"error": "Repository not found"}, headers={"X-Error-Code": "RepoNotFound"})
        shas = commits[f"{repo}@{rev}"]  # newest first, as the Hub lists them
        skip = int((req.query.get("p") or ["0"])[0])
        items = [{"id": sha, "authors": [{"user": "acme"}], "date": f"2026-12-06T0{i}:00:00.000Z",
                  "title": f"commit {sha[:4]}", "message": ""} for i, sha in enumerate(shas)][skip:skip + 2]
        headers = {}
        if skip + 2 < len(shas):
            headers["Link"] = f'<{server.url}/api/models/{repo}/commits/{rev}?p={skip + 2}>; rel="next"'
        return Reply(200, items, headers=headers)

    server.extra("GET", r"^/api/agent-harnesses$", Reply(200, {"standardEnvVars": [], "harnesses": {}}))
    server.extra("GET", r"^/api/models/[^/]+/[^/]+/refs$", list_refs)
    server.extra("GET", r"^/api/models/[^/]+/[^/]+/commits/[^/]+$", list_commits)
    with server:
        yield server


def test_hub_refs_and_commits(tmp_path, capsys, monkeypatch):
    a, b, c, d = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
    refs = {"acme/churn": {"branches": {"main": b, "dev": d}, "tags": {"v1": a}}}
    commits = {"acme/churn@main": [b, a]}
    state = tmp_path / "state"
    with hub(refs, commits) as server:
        monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        host = urlsplit(server.url).netloc
        # the Hub's webhook announced tag v1 before anything was polled
        body = json.dumps({"event": {"action": "update", "scope": "repo.content"},
                           "repo": {"type": "model", "name": "acme/churn", "headSha": a,
                                    "url": {"web": f"{server.url}/acme/churn", "api": f"{server.url}/api/models/acme/churn"}},
                           "updatedRefs": [{"ref": "refs/tags/v1", "oldSha": None, "newSha": a}]}).encode()
        webhook = HUB.parse(Request("POST", "/webhooks/huggingface", {"Webhook-Id": "w-1"}, body))
        assert Inbox(state).put("huggingface", webhook).duplicate is False

        options = ["--option", "repositories=[acme/churn]", "--option", f"endpoint={server.url}",
                   "--option", "branches=[main]"]
        code, counts, err = poll(capsys, state, "huggingface", *options)
        assert code == 0, err
        # the first poll is a baseline: main's head b is recorded (ignored), tag v1 is known from the webhook
        assert (counts["seen"], counts["new"], counts["baseline"], counts["duplicate"]) == (2, 0, 1, 1)
        events = {e.event.version: e.event for e in Inbox(state).list()}
        assert set(events) == {"v1", b}
        assert events["v1"].delivery_id == "w-1#refs/tags/v1"
        assert events[b].artifact_uri == f"hf://acme/churn@{b}" and events[b].tags["hf.ref"] == "refs/heads/main"
        assert dict(events[b].registry) == {"repository": "acme/churn", "host": host}

        # three pushes to main while nobody polled: with commits: 3 each one is announced, oldest first
        commits["acme/churn@main"] = [d, c, b, a]
        refs["acme/churn"]["branches"]["main"] = d
        code, counts, err = poll(capsys, state, "huggingface", *options, "--option", "commits=3")
        assert code == 0, err
        assert (counts["seen"], counts["new"], counts["duplicate"]) == (4, 2, 2)
        order = [e.event.version for e in Inbox(state).list()]
        assert order == ["v1", b, c, d]
        assert all(r.header("Authorization") == f"Bearer {HF_TOKEN}" for r in server.requests
                   if r.path.startswith("/api/models/"))


def test_bad_poll_settings_name_the_field(tmp_path, capsys):
    cases = [
        ({"oci": {}}, "poll.oci.registry: is required"),
        ({"oci": {"registry": "registry:5000"}}, "poll.oci.registry: 'registry:5000' is not an http(s) URL"),
        ({"mlflow": {"tracking_uri": "http://m", "interval": 0}}, "poll.mlflow.interval: must be a number of seconds"),
        ({"mlflow": {"tracking_uri": "http://m", "modles": "all"}}, "poll.mlflow: unknown key 'modles'. Did you mean 'models'"),
        ({"mlflwo": {}}, "poll.mlflwo: unknown registry 'mlflwo'. Did you mean 'mlflow'?"),
        ({"azureml": {"subscription": "s", "resource_group": "r"}}, "poll.azureml.workspace: is required"),
        ({"huggingface": {"repositories": "all"}}, "poll.huggingface.repositories: list the model repositories"),
        ({"sagemaker": {"model_package_groups": [1]}}, "poll.sagemaker.model_package_groups: must be 'all' or a list"),
    ]
    for section, message in cases:
        with pytest.raises(ConfigError) as err:
            config_section(section)
        assert message in err.value.message, (section, err.value.message)
    # through the listener config, the file is named; the command exits 2
    config = tmp_path / "listener.yml"
    config.write_text("poll:\n  oci: {registry: http://r:5000, interval: soon}\n")
    capsys.readouterr()
    assert main(["poll", "--once", "--config", str(config), "--state-dir", str(tmp_path / "s")]) == 2
    assert f"{config}: poll.oci.interval: must be a number of seconds above 0, got 'soon'" in capsys.readouterr().err
    assert main(["serve", "--config", str(config), "--state-dir", str(tmp_path / "s")]) == 2
