"""Azure Machine Learning model versions through the Azure Resource Manager REST API.

* ``GET .../workspaces/W/models?api-version=2024-04-01`` (paged by ``nextLink``) when
  ``models: all`` (the default), else the listed ``models``;
* ``GET .../workspaces/W/models/NAME/versions`` (paged): each version that is not archived is a
  ``model_version.created``, as Event Grid's ``ModelRegistered`` is.

``registry`` = ``subscription``, ``resource_group``, ``workspace`` (the options, spelled as in the
Event Grid topic so that a version announced by both is one event); ``artifact_uri`` = the version's
``azureml://subscriptions/.../models/NAME/versions/V`` asset id; ``tags`` = its tags. The ARM token
and endpoint are those of ``fetch.azureml``: ``AZURE_ACCESS_TOKEN``, else azure-identity;
``AZURE_RESOURCE_MANAGER_URL`` for another cloud.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping
from urllib.parse import quote

from ..errors import ServiceError
from ..events import ModelVersionEvent
from ..fetch.azureml import API_VERSION, DEFAULT_ARM_URL, _get, _token
from . import delivery_id, names_option, string_option

KEYS = ("subscription", "resource_group", "workspace", "models")


def validate(options: Mapping[str, Any], where: str) -> None:
    for key in ("subscription", "resource_group", "workspace"):
        string_option(options, key, where, required=True, hint=": the workspace to poll (subscription id, resource "
                      "group and workspace name, as in the Event Grid topic)")
    names_option(options, "models", where)


class AzureMLPoller:
    name = "azureml"
    event_source = "azureml"

    def __init__(self, subscription: str, resource_group: str, workspace: str, models: list[str] | None) -> None:
        self.registry = {"subscription": subscription, "resource_group": resource_group, "workspace": workspace}
        self.models = models
        self.path = (f"/subscriptions/{quote(subscription, safe='')}/resourceGroups/{quote(resource_group, safe='')}"
                     f"/providers/Microsoft.MachineLearningServices/workspaces/{quote(workspace, safe='')}")

    def describe(self) -> str:
        return f"Azure ML workspace {self.registry['workspace']}"

    def identity(self) -> str:
        # the workspace's ARM path: workspaces of one name in other resource groups or
        # subscriptions are other registries (a state kept under describe() is taken over once)
        return f"Azure ML workspace {self.path}"

    def _pages(self, path: str, what: str) -> Iterator[dict]:
        arm = (os.environ.get("AZURE_RESOURCE_MANAGER_URL") or DEFAULT_ARM_URL).rstrip("/")
        token = _token(arm + "/.default", "AZURE_ACCESS_TOKEN", "Azure Resource Manager")
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        url: str | None = arm + path
        params: dict[str, str] | None = {"api-version": API_VERSION}
        while url:
            body = _get(url, headers, what, params=params).json()
            yield from body.get("value") or []
            url = body.get("nextLink")
            params = None  # nextLink carries the api-version and the skip token
            if url and not url.startswith(arm + "/"):
                raise ServiceError(f"{self.describe()}: nextLink {url.split('?')[0]!r} leaves {arm}; not followed")

    def list_versions(self) -> Iterator[ModelVersionEvent]:
        models = self.models
        if models is None:
            models = [str(m.get("name")) for m in self._pages(f"{self.path}/models", "the models") if m.get("name")]
        r = self.registry
        for name in models:
            for item in self._pages(f"{self.path}/models/{quote(name, safe='')}/versions",
                                    f"the versions of model {name}"):
                props = item.get("properties") or {}
                version = str(item.get("name") or "")
                if not version or props.get("isArchived"):
                    continue
                yield ModelVersionEvent(
                    source=self.event_source, kind="model_version.created", model=name, version=version,
                    delivery_id=delivery_id(self.event_source, r["workspace"], name, version),
                    time=(item.get("systemData") or {}).get("createdAt"),
                    tags={str(k): "" if v is None else str(v) for k, v in (props.get("tags") or {}).items()},
                    artifact_uri=(f"azureml://subscriptions/{r['subscription']}/resourceGroups/{r['resource_group']}"
                                  f"/workspaces/{r['workspace']}/models/{name}/versions/{version}"),
                    registry=r, source_event_type="poll: model versions",
                )


def build(options: Mapping[str, Any], where: str) -> AzureMLPoller:
    validate(options, where)
    return AzureMLPoller(options["subscription"], options["resource_group"], options["workspace"],
                         names_option(options, "models", where))
