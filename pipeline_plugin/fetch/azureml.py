"""Azure Machine Learning model versions, through the Azure Resource Manager REST API and Blob storage.

``azureml://subscriptions/S/resourceGroups/RG/workspaces/W/models/NAME/versions/V`` (the asset id an
Event Grid ``ModelRegistered`` event names):

1. ``GET {ARM}/subscriptions/S/resourceGroups/RG/providers/Microsoft.MachineLearningServices/
   workspaces/W/models/NAME/versions/V?api-version=2024-04-01`` -> ``properties.modelUri``;
2. a datastore path (``azureml://[subscriptions/.../workspaces/W/]datastores/D/paths/P``):
   ``GET .../workspaces/W/datastores/D`` -> the blob account, container and endpoint; an
   ``https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH`` URI is used as it is;
3. the Blob service REST API: ``GET`` the blob ``P``, or List Blobs with ``prefix=P/`` and ``GET``
   each one.

Tokens: ARM: ``AZURE_ACCESS_TOKEN``, else azure-identity's ``DefaultAzureCredential`` when installed.
Storage: ``AZURE_STORAGE_SAS_TOKEN`` (a SAS query string), else ``AZURE_STORAGE_ACCESS_TOKEN``, else
azure-identity (scope ``https://storage.azure.com/.default``; the identity needs *Storage Blob Data
Reader*). ``AZURE_RESOURCE_MANAGER_URL`` names another cloud's ARM endpoint;
``AZURE_STORAGE_BLOB_ENDPOINT`` replaces ``https://ACCOUNT.blob.ENDPOINT`` (e.g. Azurite's
``http://127.0.0.1:10000/devstoreaccount1``). Tokens are never logged.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from ..errors import ConfigError, NotFoundError, ServiceError
from . import FetchContext

API_VERSION = "2024-04-01"
BLOB_API_VERSION = "2021-08-06"
DEFAULT_ARM_URL = "https://management.azure.com"
STORAGE_SCOPE = "https://storage.azure.com/.default"
MODEL = re.compile(r"^azureml://subscriptions/([^/]+)/resourcegroups/([^/]+)/workspaces/([^/]+)/models/([^/]+)/versions/([^/]+)/?$",
                   re.I)
DATASTORE = re.compile(r"^azureml://(?:subscriptions/[^/]+/resourcegroups/[^/]+/(?:providers/microsoft\.machinelearningservices/)?"
                       r"workspaces/[^/]+/)?datastores/([^/]+)/paths/(.+)$", re.I)
#: a blob URL in Azure's public, China or US Government clouds (the storage token goes only there)
BLOB_URL = re.compile(r"^(https://[a-z0-9]{3,24}\.blob\.core\.(?:windows\.net|chinacloudapi\.cn|usgovcloudapi\.net))"
                      r"/([^/?]+)/?([^?]*)(\?.*)?$")


def _token(scope: str, env: str, what: str) -> str:
    token = os.environ.get(env)
    if token:
        return token
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise ConfigError(f"cannot fetch from Azure ML: no {what} credential; set {env} (az account get-access-token "
                          f"--resource {scope.removesuffix('/.default')} --query accessToken -o tsv) or "
                          "pip install azure-identity for managed/workload identity") from None
    try:
        return DefaultAzureCredential().get_token(scope).token
    except Exception as exc:  # noqa: BLE001 - azure-identity raises several kinds
        raise ServiceError(f"Azure ML fetch could not get a {what} token: {exc}") from exc


def _get(url: str, headers: dict[str, str], what: str, params: dict[str, str] | None = None, stream: bool = False):
    import requests

    try:
        resp = requests.get(url, params=params, headers=headers, timeout=60, stream=stream)
    except requests.RequestException as exc:
        raise ServiceError(f"Azure ML fetch: no answer from {urlsplit(url).netloc} for {what} ({exc})") from exc
    if resp.status_code == 404:
        raise NotFoundError(f"Azure ML fetch: {what} does not exist (404 from {url.split('?')[0]})")
    if resp.status_code >= 400:
        hint = {401: " (the token was refused: renew it)",
                403: " (the identity needs AzureML Data Scientist on the workspace, Storage Blob Data Reader on the storage)"
                }.get(resp.status_code, "")
        raise ServiceError(f"Azure ML fetch: GET {url.split('?')[0]} for {what} answered {resp.status_code}: "
                           f"{resp.text[:300]}{hint}")
    return resp


def _arm(path: str, what: str) -> dict[str, Any]:
    arm = (os.environ.get("AZURE_RESOURCE_MANAGER_URL") or DEFAULT_ARM_URL).rstrip("/")
    token = _token(arm + "/.default", "AZURE_ACCESS_TOKEN", "Azure Resource Manager")
    resp = _get(arm + path, {"Authorization": f"Bearer {token}", "Accept": "application/json"}, what,
                params={"api-version": API_VERSION})
    return resp.json()


class Blobs:
    """A blob container read over the Blob service REST API."""

    def __init__(self, container_url: str, sas: str | None) -> None:
        self.container_url = container_url.rstrip("/")
        self.sas = (sas or os.environ.get("AZURE_STORAGE_SAS_TOKEN") or "").lstrip("?")
        self.headers = {"x-ms-version": BLOB_API_VERSION}
        if not self.sas:
            token = _token(STORAGE_SCOPE, "AZURE_STORAGE_ACCESS_TOKEN", "Azure Storage")
            self.headers["Authorization"] = f"Bearer {token}"

    def _url(self, suffix: str, query: str = "") -> str:
        q = "&".join(x for x in (query, self.sas) if x)
        return self.container_url + suffix + (f"?{q}" if q else "")

    def list(self, prefix: str) -> list[tuple[str, int]]:
        names: list[tuple[str, int]] = []
        marker = ""
        while True:
            query = f"restype=container&comp=list&prefix={quote(prefix, safe='')}" + (f"&marker={quote(marker, safe='')}" if marker else "")
            resp = _get(self._url("", query), self.headers, f"the blobs under {prefix!r}")
            root = ET.fromstring(resp.content)
            for blob in root.iter("Blob"):
                size = blob.findtext("Properties/Content-Length") or "0"
                names.append((blob.findtext("Name") or "", int(size)))
            marker = root.findtext("NextMarker") or ""
            if not marker:
                return names

    def download(self, name: str, target: Path, ctx: FetchContext, size: int = 0) -> None:
        resp = _get(self._url("/" + quote(name)), self.headers, f"blob {name!r}", stream=True)
        size = size or int(resp.headers.get("Content-Length") or 0)
        target.parent.mkdir(parents=True, exist_ok=True)
        done, told = 0, 0
        with open(target, "wb") as fh:
            for chunk in resp.iter_content(1 << 20):
                fh.write(chunk)
                done += len(chunk)
                if size > (8 << 20) and done * 10 // size > told:
                    told = done * 10 // size
                    ctx.progress(f"{name}: {done >> 10} of {size >> 10} KiB")


class AzureMLBackend:
    name = "azureml"
    prefixes = ("azureml://",)
    extra = None  # requests is a core dependency; azure-identity is optional

    def fetch(self, uri: str, dest: Path, ctx: FetchContext) -> Path:
        m = MODEL.match(uri)
        if not m:
            raise ConfigError(f"model URI {uri!r}: expected azureml://subscriptions/S/resourceGroups/RG/workspaces/W/"
                              "models/NAME/versions/VERSION (the model version's asset id)")
        sub, rg, ws, name, version = m.groups()
        workspace = (f"/subscriptions/{quote(sub, safe='')}/resourceGroups/{quote(rg, safe='')}/providers/"
                     f"Microsoft.MachineLearningServices/workspaces/{quote(ws, safe='')}")
        ctx.progress(f"fetching Azure ML model {name} v{version} from workspace {ws}")
        body = _arm(f"{workspace}/models/{quote(name, safe='')}/versions/{quote(version, safe='')}",
                    f"model {name} version {version} in workspace {ws}")
        model_uri = str((body.get("properties") or {}).get("modelUri") or "")
        ds = DATASTORE.match(model_uri)
        if ds:
            store, path = ds.group(1), ds.group(2).strip("/")
            props = _arm(f"{workspace}/datastores/{quote(store, safe='')}", f"datastore {store!r}").get("properties") or {}
            if str(props.get("datastoreType", "AzureBlob")).lower() != "azureblob":
                raise ConfigError(f"model URI {uri!r}: its files are on datastore {store!r} of type "
                                  f"{props.get('datastoreType')}; only Azure Blob datastores are fetched")
            account_url = os.environ.get("AZURE_STORAGE_BLOB_ENDPOINT") or (
                f"{props.get('protocol') or 'https'}://{props['accountName']}.blob.{props.get('endpoint') or 'core.windows.net'}")
            blobs, sas = f"{account_url.rstrip('/')}/{props['containerName']}", None
        else:
            b = BLOB_URL.match(model_uri)
            if not b:
                raise ConfigError(f"model URI {uri!r}: its modelUri {model_uri.split('?')[0]!r} is neither a datastore "
                                  "path (azureml://datastores/D/paths/P) nor an Azure blob URL "
                                  "(https://ACCOUNT.blob.core.windows.net/...); register the model from a datastore path")
            blobs, path, sas = f"{b.group(1)}/{b.group(2)}", b.group(3).strip("/"), (b.group(4) or "")[1:] or None
        return self._download(Blobs(blobs, sas), path, dest, ctx, uri)

    def _download(self, blobs: Blobs, path: str, dest: Path, ctx: FetchContext, uri: str) -> Path:
        listed = blobs.list(path)
        exact = [(n, s) for n, s in listed if n == path]
        if exact:
            target = dest / path.rsplit("/", 1)[-1]
            blobs.download(path, target, ctx, exact[0][1])
            return target
        prefix = path + "/" if path else ""
        files = [(n, s) for n, s in listed if n.startswith(prefix) and not n.endswith("/")]
        if not files:
            raise NotFoundError(f"model URI {uri!r}: no blobs at {path!r} in {blobs.container_url}")
        model = dest / "model"
        for n, size in files:
            target = (model / n[len(prefix):]).resolve()
            if not target.is_relative_to(model.resolve()):
                raise ConfigError(f"model URI {uri!r}: blob name {n!r} leaves the download folder")
            blobs.download(n, target, ctx, size)
        ctx.progress(f"fetched {len(files)} file(s)")
        return model


BACKEND = AzureMLBackend()
