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
from .history import now_iso
from .writeback import TAG_IMAGE, TAG_REASON, TAG_RUN_URL, TAG_SCORING_URI, TAG_STATUS, TAG_UPDATED_AT, WritebackInfo

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


def _set_tags(info: WritebackInfo, model: str, version: str, tags: dict[str, str]) -> dict[str, str]:
    url = _version_url(info, model, version)
    token = _token()
    current = _request("GET", url, token) or {}
    properties = dict(current.get("properties") or {})
    properties["tags"] = {**dict(properties.get("tags") or {}), **tags}
    _request("PUT", url, token, {"properties": properties})
    return tags


def _tags(status: str, info: WritebackInfo) -> dict[str, str]:
    tags = {TAG_STATUS: status, TAG_UPDATED_AT: now_iso()}
    if info.scoring_uri:
        tags[TAG_SCORING_URI] = info.scoring_uri
    if info.run_url:
        tags[TAG_RUN_URL] = info.run_url
    if info.image:
        tags[TAG_IMAGE] = info.image
    if info.reason:
        tags[TAG_REASON] = info.reason
    return {k: v[:MAX_VALUE] for k, v in tags.items()}


class _AzureMLWriter:
    name = "azureml"

    def production(self, model: str, version: str, previous_version: str | None, info: WritebackInfo) -> dict[str, Any]:
        written: dict[str, Any] = {"workspace": dict(info.registry).get("workspace"), "tags": {}}
        written["tags"][version] = _set_tags(info, model, version, _tags("production", info))
        if previous_version and previous_version != version:
            written["tags"][previous_version] = _set_tags(
                info, model, previous_version, {TAG_STATUS: "previous-production", TAG_UPDATED_AT: now_iso()})
        return written

    def rollback(self, model: str, restored_version: str, from_version: str | None, before_restored: str | None,
                 info: WritebackInfo) -> dict[str, Any]:
        written: dict[str, Any] = {"workspace": dict(info.registry).get("workspace"), "tags": {}}
        written["tags"][restored_version] = _set_tags(info, model, restored_version, _tags("production", info))
        if from_version and from_version != restored_version:
            gone = {TAG_STATUS: "rolled-back", TAG_UPDATED_AT: now_iso()}
            if info.reason:
                gone[TAG_REASON] = info.reason[:MAX_VALUE]
            written["tags"][from_version] = _set_tags(info, model, from_version, gone)
        return written

    def status(self, model: str, version: str, status: str, info: WritebackInfo) -> dict[str, Any]:
        return {"workspace": dict(info.registry).get("workspace"),
                "tags": {version: _set_tags(info, model, version, _tags(status, info))}}


WRITER = _AzureMLWriter()
