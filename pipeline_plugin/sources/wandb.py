"""Weights & Biases registry automations (``POST /webhooks/wandb``).

W&B sends the JSON body the automation's author writes, with template variables rendered
(``${event_type}``, ``${event_author}``, ``${alias}``, ``${tag}``, ``${artifact_version}``,
``${artifact_version_string}``, ``${artifact_collection_name}``, ``${project_name}``,
``${entity_name}``, ``${artifact_metadata.<KEY>}``), and the webhook's access token as
``Authorization: Bearer <token>`` (scheme ``token``). The suggested template (docs/sources.md)
puts each variable under its own name at the top level::

    {"event_type": "${event_type}", "event_author": "${event_author}", "alias": "${alias}",
     "artifact_version": "${artifact_version}", "artifact_version_string": "${artifact_version_string}",
     "artifact_collection_name": "${artifact_collection_name}", "project_name": "${project_name}",
     "entity_name": "${entity_name}"}

The same names under ``client_payload`` (W&B's GitHub ``repository_dispatch`` example, whose top-level
``event_type`` is the workflow's own) are read too; a top-level ``event_type`` that is no W&B event is
then ignored in favour of ``client_payload.event_type``.

Mapping, ``event_type`` -> kind:

=========================================  ===========================  ===========================
W&B event                                  kind                         fields used
=========================================  ===========================  ===========================
``LINK_ARTIFACT`` / ``LINK_MODEL``        ``model_version.created``     version string, collection
(linked to a registry collection),
``CREATE_ARTIFACT``
``ADD_ARTIFACT_ALIAS``, ``UPDATE_...``     ``alias.set``                ``alias`` (or the version
                                                                        string's ``:<alias>``)
``ADD_ARTIFACT_TAG``                       ``tag.set``                  ``tag`` -> ``{tag: ""}``
run events (``RUN_METRIC_*``,              none (answered, nothing      -
``RUN_STATE``), others                     stored)
=========================================  ===========================  ===========================

Fields: ``artifact_version_string`` is ``<entity>/<project>/<collection>:<version or alias>``;
``model`` = the collection (``artifact_collection_name`` when sent, else the string's collection);
``version`` = the part after ``:`` (``v3``) - or, when that part is an alias (W&B documents
``...:<alias>`` for alias events), the immutable artifact id from ``artifact_version``; ``registry`` = ``entity`` and ``project`` (from
``entity_name``/``project_name`` when sent, else the string); ``artifact_uri`` =
``artifact_version`` (``wandb-artifact://_id/...``, immutable) when sent, else
``wandb-artifact://<version string>`` (the ``wandb`` SDK's own form); tags ``wandb.author`` and ``wandb.artifact_version_string``.
``delivery_id`` = a digest of the body (W&B sends no delivery id).

Test deliveries: the webhook's **Test** button sends whatever payload is pasted there, unrendered.
A body whose ``event_type`` is still the literal ``${event_type}``, or with ``"test": true``, is
recorded with ``is_test=True``: never deployed.
"""

from __future__ import annotations

import re

from ..errors import PayloadError
from ..events import ModelVersionEvent
from . import BaseSource, Request
from . import _payload as P

#: ``${event_type}`` values: the docs' names, and the backend's own (``wandb.automations.EventType``:
#: ``LINK_ARTIFACT = "LINK_MODEL"``; ``UPDATE_ARTIFACT_ALIAS`` for automations made before
#: ``ADD_ARTIFACT_ALIAS``); ``ADD_ARTIFACT_TAG`` for the "An artifact tag is added" event (``${tag}``)
KINDS = {
    "LINK_ARTIFACT": "model_version.created",
    "LINK_MODEL": "model_version.created",
    "CREATE_ARTIFACT": "model_version.created",
    "ADD_ARTIFACT_ALIAS": "alias.set",
    "UPDATE_ARTIFACT_ALIAS": "alias.set",
    "ADD_ARTIFACT_TAG": "tag.set",
}
#: W&B event types that name no artifact version (answered, nothing stored)
OTHER_EVENTS = ("RUN_METRIC", "RUN_METRIC_THRESHOLD", "RUN_METRIC_CHANGE", "RUN_METRIC_ZSCORE", "RUN_STATE")
UNRENDERED = "${event_type}"
V_NUMBER = re.compile(r"^v\d+$")
ARTIFACT_ID_PREFIX = "wandb-artifact://_id/"
#: ``<entity>/<project>/<collection>:<version>``; the collection may hold no ``/`` nor ``:``
VERSION_STRING = re.compile(r"^(?P<entity>[^/:\s]+)/(?P<project>[^/:\s]+)/(?P<collection>[^/:]+):(?P<version>[^/:\s]+)$")


def _fields(body: dict) -> tuple[dict, str]:
    """The object holding the template's fields and its JSON path."""
    inner_field, inner = P.get(body, "", "client_payload")
    if inner is None:
        return body, ""
    return P.need_object(inner, inner_field), inner_field


def _event_type(body: dict, fields: dict, path: str) -> str:
    top = P.string(body, "", "event_type", required=fields is body)
    if fields is body:
        return top
    inner = P.string(fields, path, "event_type", required=False)
    if inner:
        return inner
    if top in KINDS or top in OTHER_EVENTS or top == UNRENDERED:
        return top
    raise PayloadError(
        f"{path}.event_type is missing: the top-level event_type {top!r} is the receiver's own, so put "
        '"event_type": "${event_type}" in client_payload', field=f"{path}.event_type",
    )


class WandbSource(BaseSource):
    name = "wandb"
    auth_scheme = "token"

    def parse(self, request: Request) -> list[ModelVersionEvent]:
        body = P.need_object(request.json(), "")
        fields, path = _fields(body)
        event_type = _event_type(body, fields, path)
        test_field, test_flag = P.get(body, "", "test")
        if test_flag is not None and not isinstance(test_flag, bool):
            raise PayloadError(f"{test_field} must be true or false", field=test_field)
        is_test = event_type == UNRENDERED or bool(test_flag)
        kind = KINDS.get(event_type)
        if kind is None and not is_test:
            return []  # run events and event types added later: no artifact version to act on
        kind = kind or "model_version.created"

        def text(name: str, required: bool = False) -> str | None:
            return P.string(fields, path, name, required=required)

        where = P.join(path, "artifact_version_string")
        version_string = text("artifact_version_string", required=True)
        match = VERSION_STRING.match(version_string)
        if match is None and not is_test:
            raise PayloadError(
                f"{where} is {version_string!r}; W&B renders ${{artifact_version_string}} as "
                "'<entity>/<project>/<collection>:<version>' - put the variable itself in the payload template",
                field=where,
            )
        parts = match.groupdict() if match else {"entity": "", "project": "", "collection": version_string, "version": version_string}
        entity = text("entity_name") or parts["entity"]
        project = text("project_name") or parts["project"]
        model = text("artifact_collection_name") or parts["collection"]
        version = parts["version"]
        suffix_alias = None if V_NUMBER.match(version) else version
        artifact_id = text("artifact_version")
        if not V_NUMBER.match(version) and artifact_id and artifact_id.startswith(ARTIFACT_ID_PREFIX):
            # ``...:<alias>``: the alias moves, the artifact id does not
            version = artifact_id[len(ARTIFACT_ID_PREFIX):] or version
        author = text("event_author") or ""
        artifact_uri = artifact_id or f"wandb-artifact://{version_string}"

        alias = None
        tags = {"wandb.author": author, "wandb.artifact_version_string": version_string}
        if kind == "alias.set":
            alias = text("alias") or suffix_alias
            if not alias:
                where_alias = P.join(path, "alias")
                raise PayloadError(
                    f'{where_alias} is missing; an ADD_ARTIFACT_ALIAS delivery needs "alias": "${{alias}}" in the template',
                    field=where_alias,
                )
        elif kind == "tag.set":
            tags = {text("tag", required=True): ""}
        registry = {k: v for k, v in (("entity", entity), ("project", project)) if v}
        return [
            ModelVersionEvent(
                source=self.name,
                kind=kind,
                model=model,
                version=version,
                delivery_id=P.body_digest(request.body),
                tags=tags,
                alias=alias,
                artifact_uri=artifact_uri,
                registry=registry,
                is_test=is_test,
                source_event_type=event_type,
            )
        ]


SOURCE = WandbSource()
