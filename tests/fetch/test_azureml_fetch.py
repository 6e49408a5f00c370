"""Azure ML model versions against a loopback server that answers as the documented REST APIs do
(tests/contract_server.py with routes of its own: ../shared/contracts has no Azure ML description):
ARM's model version and datastore GETs (bearer token, api-version), then Blob storage's List Blobs
(XML, paged with NextMarker) and Get Blob with the storage token and x-ms-version."""

from __future__ import annotations

import re
from contextlib import contextmanager
from xml.sax.saxutils import escape

import pytest

from pipeline_plugin.errors import ConfigError, NotFoundError, ServiceError
from pipeline_plugin.fetch import fetch

WS = (r"/subscriptions/sub-1/resourceGroups/rg-ml/providers/Microsoft\.MachineLearningServices/workspaces/ws-prod")
ARM_TOKEN, STORAGE_TOKEN = "arm-token-fetch", "storage-token-fetch"
URI = "azureml://subscriptions/sub-1/resourceGroups/rg-ml/workspaces/ws-prod/models/credit/versions/{v}"


@contextmanager
def azure(blobs: dict[str, bytes], versions: dict[str, str]):
    """ARM (model versions -> modelUri, the blob datastore) and one storage account's container."""
    from contract_server import ContractServer, Reply

    server = ContractServer([])

    def arm_ok(req):
        if req.header("Authorization") != f"Bearer {ARM_TOKEN}":
            return Reply(401, {"error": {"code": "AuthenticationFailed", "message": "bad token"}})
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", (req.query.get("api-version") or [""])[0]):
            return Reply(400, {"error": {"code": "MissingApiVersionParameter", "message": "api-version"}})
        return None

    def version(req):
        name, v = re.search(WS + r"/models/([^/]+)/versions/([^/]+)$", req.path).groups()
        if arm_ok(req):
            return arm_ok(req)
        if (name, v) != ("credit", v) or v not in versions:
            return Reply(404, {"error": {"code": "UserError", "message": "Not found"}})
        return Reply(200, {"id": req.path, "name": v, "properties": {"modelUri": versions[v], "modelType": "custom_model"}})

    def datastore(req):
        if arm_ok(req):
            return arm_ok(req)
        return Reply(200, {"name": "workspaceblobstore", "properties": {
            "datastoreType": "AzureBlob", "accountName": "mlstore", "containerName": "azureml",
            "endpoint": "core.windows.net", "protocol": "https", "credentials": {"credentialsType": "None"}}})

    def storage_ok(req):
        if req.header("Authorization") != f"Bearer {STORAGE_TOKEN}" or not req.header("x-ms-version"):
            return Reply(403, "<Error><Code>AuthenticationFailed</Code></Error>")
        return None

    def container(req):
        if storage_ok(req):
            return storage_ok(req)
        assert req.query["restype"] == ["container"] and req.query["comp"] == ["list"]
        prefix, marker = req.query.get("prefix", [""])[0], req.query.get("marker", [""])[0]
        names = sorted(n for n in blobs if n.startswith(prefix) and n > marker)
        page, rest = names[:2], names[2:]
        items = "".join(f"<Blob><Name>{escape(n)}</Name><Properties><Content-Length>{len(blobs[n])}</Content-Length>"
                        "</Properties></Blob>" for n in page)
        body = (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ContainerName="azureml"><Prefix>{escape(prefix)}'
                f"</Prefix><Blobs>{items}</Blobs><NextMarker>{escape(page[-1]) if rest else ''}</NextMarker></EnumerationResults>")
        return Reply(200, body.encode(), headers={"Content-Type": "application/xml"})

    def blob(req):
        if storage_ok(req):
            return storage_ok(req)
        name = re.sub(r"^/devstoreaccount1/azureml/", "", req.path)
        from urllib.parse import unquote

        name = unquote(name)
        if name not in blobs:
            return Reply(404, "<Error><Code>BlobNotFound</Code></Error>")
        return Reply(200, blobs[name], headers={"Content-Type": "application/octet-stream"})

    server.extra("GET", WS + r"/models/[^/]+/versions/[^/]+$", version)
    server.extra("GET", WS + r"/datastores/workspaceblobstore$", datastore)
    server.extra("GET", r"/devstoreaccount1/azureml$", container)
    server.extra("GET", r"/devstoreaccount1/azureml/.+$", blob)
    with server:
        yield server


@pytest.fixture
def env(monkeypatch):
    def setup(server):
        monkeypatch.setenv("AZURE_RESOURCE_MANAGER_URL", server.url)
        monkeypatch.setenv("AZURE_STORAGE_BLOB_ENDPOINT", server.url + "/devstoreaccount1")
        monkeypatch.setenv("AZURE_ACCESS_TOKEN", ARM_TOKEN)
        monkeypatch.setenv("AZURE_STORAGE_ACCESS_TOKEN", STORAGE_TOKEN)
        monkeypatch.delenv("AZURE_STORAGE_SAS_TOKEN", raising=False)
    return setup


def test_a_model_version_on_a_blob_datastore_is_fetched(env, tmp_path, monkeypatch):
    blobs = {"LocalUpload/abc/model/MLmodel": b"flavors: {}\n", "LocalUpload/abc/model/model.pkl": b"w3",
             "LocalUpload/abc/model/requirements.txt": b"scikit-learn\n", "LocalUpload/abc/model/sub dir/x.json": b"{}",
             "LocalUpload/abc/modelx/other": b"not this", "LocalUpload/one/model.onnx": b"onnx"}
    versions = {
        "3": "azureml://subscriptions/sub-1/resourcegroups/rg-ml/workspaces/ws-prod/datastores/workspaceblobstore/paths/LocalUpload/abc/model/",
        "4": "azureml://datastores/workspaceblobstore/paths/LocalUpload/one/model.onnx",
        "5": "azureml://jobs/job-5/outputs/artifacts/paths/model/",
        "6": "https://mlstore.blob.attacker.example/azureml/model",  # the storage token never goes there
    }
    with azure(blobs, versions) as server:
        env(server)
        got = fetch(URI.format(v=3), tmp_path / "v3")
        assert got.backend == "azureml" and got.path == tmp_path / "v3" / "model"
        assert sorted(p.relative_to(got.path).as_posix() for p in got.path.rglob("*") if p.is_file()) == [
            "MLmodel", "model.pkl", "requirements.txt", "sub dir/x.json"]
        assert got.requirements == got.path / "requirements.txt"
        one = fetch(URI.format(v=4), tmp_path / "v4")
        assert one.path == tmp_path / "v4" / "model.onnx" and one.path.read_bytes() == b"onnx"
        for v in ("5", "6"):
            with pytest.raises(ConfigError, match="neither a datastore path"):
                fetch(URI.format(v=v), tmp_path / f"v{v}")
        with pytest.raises(NotFoundError, match="model credit version 9"):
            fetch(URI.format(v=9), tmp_path / "v9")
        monkeypatch.setenv("AZURE_ACCESS_TOKEN", "expired-secret")
        with pytest.raises(ServiceError, match="401") as err:
            fetch(URI.format(v=3), tmp_path / "v3b")
        assert "expired-secret" not in err.value.message  # tokens are never echoed
        server.assert_clean()


def test_a_bad_azureml_uri_names_the_form(tmp_path):
    with pytest.raises(ConfigError, match="expected azureml://subscriptions/S/resourceGroups/RG/workspaces/W/models"):
        fetch("azureml://registries/shared/models/credit/versions/1", tmp_path / "x")
