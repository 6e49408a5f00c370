"""Write-back to Azure Machine Learning: the model version's tags (the same ``pipeline_plugin.*``
names as MLflow's: status, scoring URI, run URL, image, updated at, reason), through the Azure
Resource Manager REST API (``Microsoft.MachineLearningServices/workspaces/models/versions``: read
the version, change its tags, put it back whole).

The workspace comes from the event (``registry``: subscription, resource_group, workspace). The
token: ``AZURE_ACCESS_TOKEN`` (e.g. ``az account get-access-token --query accessToken -o tsv``),
else ``azure-identity``'s ``DefaultAzureCredential`` when installed (managed identity, workload
identity, ``az login`` ...). ``AZURE_RESOURCE_MANAGER_URL`` names another cloud's endpoint.

Azure ML sends no event for a tag change (Event Grid's ``ModelRegistered`` is only for new
versions), so these writes start nothing.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from .errors import ConfigError, ServiceError
from .writeback import VersionTagWriter, WritebackInfo

API_VERSION = "2024-04-01"
DEFAULT_ARM_URL = "https://management.azure.com"
#: Azure ML's limit on a tag value
MAX_VALUE = 4000


def _token() -> str:
    token = os.environ.get("AZURE_ACCESS_TOKEN")
    if token:
        return token
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise ConfigError(
            "cannot write back to Azure ML: no credential; set AZURE_ACCESS_TOKEN (az account get-access-token "
            "--query accessToken -o tsv) or pip install azure-identity for managed/workload identity"
        ) from None
    arm = os.environ.get("AZURE_RESOURCE_MANAGER_URL") or DEFAULT_ARM_URL
    try:
        return DefaultAzureCredential().get_token(arm.rstrip("/") + "/.default").token
    except Exception as exc:  # noqa: BLE001 - azure-identity raises several kinds
        raise ServiceError(f"Azure ML write-back could not get a token: {exc}") from exc


def _version_url(info: WritebackInfo, model: str, version: str) -> str:
    registry = dict(info.registry)
    missing = [k for k in ("subscription", "resource_group", "workspace") if not registry.get(k)]
    if missing:
        raise ConfigError(
            f"cannot write back to Azure ML: the event names no {', '.join(missing)} (they come from the Event Grid "
            "topic, the workspace's resource id)"
        )
    arm = (os.environ.get("AZURE_RESOURCE_MANAGER_URL") or DEFAULT_ARM_URL).rstrip("/")
    return (f"{arm}/subscriptions/{quote(registry['subscription'], safe='')}/resourceGroups/"
            f"{quote(registry['resource_group'], safe='')}/providers/Microsoft.MachineLearningServices/workspaces/"
            f"{quote(registry['workspace'], safe='')}/models/{quote(model, safe='')}/versions/{quote(version, safe='')}")


def _request(method: str, url: str, token: str, body: Any = None) -> Any:
    import requests

    try:
        resp = requests.request(method, url, params={"api-version": API_VERSION}, json=body, timeout=30,
                                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    except requests.RequestException as exc:
        raise ServiceError(f"Azure ML write-back: no answer from {url.split('/subscriptions/')[0]} ({exc})") from exc
    if resp.status_code >= 400:
        try:
            message = resp.json().get("error", {}).get("message") or resp.text[:300]
        except ValueError:
            message = resp.text[:300]
        hint = {401: " (the token was refused: renew AZURE_ACCESS_TOKEN)",
                403: " (the identity needs the AzureML Data Scientist role on the workspace)",
                404: " (no such model version in the workspace)"}.get(resp.status_code, "")
        raise ServiceError(f"Azure ML write-back: {method} {url.split('?')[0]} answered {resp.status_code}: "
                           f"{message}{hint}")
    return resp.json() if resp.content else None


class _AzureMLWriter(VersionTagWriter):
    name = "azureml"
    limit = MAX_VALUE

    def target(self, info: WritebackInfo) -> dict[str, Any]:
        return {"workspace": dict(info.registry).get("workspace")}

    def set_tags(self, info: WritebackInfo, model: str, version: str, tags: dict[str, str]) -> dict[str, str]:
        url = _version_url(info, model, version)
        token = _token()
        current = _request("GET", url, token) or {}
        properties = dict(current.get("properties") or {})
        properties["tags"] = {**dict(properties.get("tags") or {}), **tags}
        _request("PUT", url, token, {"properties": properties})
        return tags


WRITER = _AzureMLWriter()
