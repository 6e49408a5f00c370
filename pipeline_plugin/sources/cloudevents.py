"""Generic CloudEvents 1.0 over HTTP (``POST /webhooks/cloudevents``), for registries and in-house
tools that can emit CloudEvents.

Modes (CloudEvents HTTP protocol binding 1.0):

* **binary**: attributes in ``ce-*`` headers (``ce-specversion``, ``ce-id``, ``ce-source``,
  ``ce-type``, optional ``ce-time``, ``ce-subject``); the body is ``data`` (JSON);
* **structured**: ``Content-Type: application/cloudevents+json``, the body is one event object;
* **batch**: ``Content-Type: application/cloudevents-batch+json``, the body is an array of events.
  A plain ``application/json`` body holding an event object or an array is read the same way.
  ``data_base64`` holding JSON is accepted in place of ``data``.

``type`` -> kind. Types are matched ignoring case on their *last two dot-separated segments*
(``com.acme.registry.model_version.created`` -> ``model_version.created``), or on the last segment
alone for CamelCase names (``Microsoft.MachineLearningServices.ModelRegistered``):

===========================================================  ==========================
type ends with                                               kind
===========================================================  ==========================
``model_version.created``, ``model_version.registered``,     ``model_version.created``
``model.registered``, ``ModelRegistered``, ``ModelVersionCreated``
``model_version.approved``, ``model.approved``               ``model_version.approved``
``model_version.rejected``, ``model.rejected``               ``model_version.rejected``
``model_version.deleted``                                    ``model_version.deleted``
``alias.set``, ``alias.created``, ``model_version_alias.created``  ``alias.set``
``alias.deleted``, ``model_version_alias.deleted``           ``alias.deleted``
``tag.set``, ``model_version_tag.set``                       ``tag.set``
``tag.deleted``, ``model_version_tag.deleted``               ``tag.deleted``
``image.pushed``, ``ImagePushed``                            ``image.pushed``
===========================================================  ==========================

Any other type gives no event (recorded, nothing started).

``data`` fields (an object; names matched ignoring case, first present wins):
``model`` | ``modelName`` | ``model_name`` | ``name`` -> model; ``version`` | ``modelVersion`` |
``model_version`` (string or integer) -> version (``"*"`` for ``alias.deleted`` without one);
``tags`` | ``modelTags`` -> tags (for ``tag.*`` also ``key``/``value``); ``alias``;
``artifact_uri`` | ``artifactUri`` | ``source`` -> artifact_uri; ``image_uri`` | ``imageUri`` |
``image``; ``digest``; ``approval_status`` | ``approvalStatus``; ``registry`` (object) -> registry,
to which the event's ``source`` attribute is added as ``ce_source``. ``time`` is the event's
``time``; ``delivery_id`` is ``<source>#<id>`` (unique per the spec, kept across retries).

Authentication: default scheme ``standard-webhooks`` (``webhook-id``/``webhook-timestamp``/
``webhook-signature``). Senders that can only send a shared token (``Authorization: Bearer`` or
``?token=``) are accepted when the server config sets this source's scheme to ``token``.

Handshake: the CloudEvents webhook ``OPTIONS`` abuse-protection request is answered 200 with
``WebHook-Allowed-Origin`` echoing ``WebHook-Request-Origin`` (and ``WebHook-Allowed-Rate: *``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from . import BaseSource, Request, Response, _payload as P, loads_json, options_handshake
from ..errors import PayloadError
from ..events import ModelVersionEvent

_CREATED, _APPROVED, _REJECTED = "model_version.created", "model_version.approved", "model_version.rejected"

#: last two dot-separated segments of ``type`` (lower case) -> kind
TYPE_SUFFIXES: dict[str, str] = {
    "model_version.created": _CREATED,
    "model_version.registered": _CREATED,
    "model.registered": _CREATED,
    "model_version.approved": _APPROVED,
    "model.approved": _APPROVED,
    "model_version.rejected": _REJECTED,
    "model.rejected": _REJECTED,
    "model_version.deleted": "model_version.deleted",
    "alias.set": "alias.set",
    "alias.created": "alias.set",
    "model_version_alias.created": "alias.set",
    "model_version_alias.set": "alias.set",
    "alias.deleted": "alias.deleted",
    "model_version_alias.deleted": "alias.deleted",
    "tag.set": "tag.set",
    "model_version_tag.set": "tag.set",
    "tag.deleted": "tag.deleted",
    "model_version_tag.deleted": "tag.deleted",
    "image.pushed": "image.pushed",
}
#: last segment of ``type`` (lower case) -> kind, for CamelCase type names
TYPE_NAMES: dict[str, str] = {
    "modelregistered": _CREATED,
    "modelversioncreated": _CREATED,
    "modelversionapproved": _APPROVED,
    "modelversionrejected": _REJECTED,
    "imagepushed": "image.pushed",
}

ANY_VERSION = "*"
_BINARY_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "subject")


def kind_for_type(event_type: str) -> str | None:
    parts = event_type.lower().split(".")
    if len(parts) >= 2 and ".".join(parts[-2:]) in TYPE_SUFFIXES:
        return TYPE_SUFFIXES[".".join(parts[-2:])]
    return TYPE_NAMES.get(parts[-1])


def _content_type(request: Request) -> str:
    return str(request.headers.get("Content-Type") or "").split(";")[0].strip().lower()


def _events(request: Request) -> list[tuple[str, dict[str, Any]]]:
    """``(json path, event attributes + data)`` for every event in the request."""
    if request.headers.get("ce-specversion") is not None:
        attributes: dict[str, Any] = {}
        for name in _BINARY_ATTRIBUTES:
            value = request.headers.get(f"ce-{name}")
            if value is not None:
                attributes[name] = value
        if request.body:
            if _content_type(request) not in ("", "application/json") and not _content_type(request).endswith("+json"):
                raise PayloadError(
                    f"binary-mode data must be JSON, got Content-Type {_content_type(request)!r}", field="(body)"
                )
            attributes["data"] = request.json()
        return [("", attributes)]
    doc = request.json()
    if _content_type(request) == "application/cloudevents-batch+json" and not isinstance(doc, list):
        raise PayloadError("a CloudEvents batch must be a JSON array", field="(body)")
    if isinstance(doc, list):
        return [(f"[{i}]", P.need_object(item, f"[{i}]")) for i, item in enumerate(doc)]
    return [("", P.need_object(doc, ""))]


def _data(event: dict[str, Any], path: str) -> dict[str, Any]:
    field, encoded = P.get(event, path, "data_base64")
    if encoded is not None and event.get("data") is None:
        if not isinstance(encoded, str):
            raise PayloadError(f"{field} must be a base64 string", field=field)
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise PayloadError(f"{field} must be base64-encoded JSON", field=field) from None
        decoded = loads_json(raw, field)
        return P.need_object(decoded, field)
    return P.obj_field(event, path, "data", required=True)


def _where(path: str, attribute: str) -> str:
    return P.join(path, attribute) if path else attribute


class CloudEventsSource(BaseSource):
    name = "cloudevents"
    auth_scheme = "standard-webhooks-or-token"

    def handshake(self, request: Request) -> Response | None:
        return options_handshake(request)

    def parse(self, request: Request) -> list[ModelVersionEvent]:
        out: list[ModelVersionEvent] = []
        for path, event in _events(request):
            spec = P.string(event, path, "specversion")
            if not spec.startswith("1."):
                raise PayloadError(f"{_where(path, 'specversion')} must be 1.0, got {spec!r}",
                                   field=_where(path, "specversion"))
            event_id = P.string(event, path, "id")
            ce_source = P.string(event, path, "source")
            event_type = P.string(event, path, "type")
            time = P.string(event, path, "time", required=False)
            kind = kind_for_type(event_type)
            if kind is None:
                continue
            dpath = _where(path, "data")
            data = _data(event, path)
            model = P.string(data, dpath, "model", "modelName", "model_name", "name", ci=True)
            version = P.version(data, dpath, "version", "modelVersion", "model_version", ci=True,
                                required=kind != "alias.deleted") or ANY_VERSION
            tags = P.string_map(data, dpath, "tags", "modelTags", ci=True)
            alias = None
            if kind.startswith("tag."):
                key = P.string(data, dpath, "key", required=not tags, ci=True)
                if key:
                    value = "" if kind == "tag.deleted" else P.string(data, dpath, "value", required=False, ci=True)
                    tags[key] = value or ""
            elif kind.startswith("alias."):
                alias = P.string(data, dpath, "alias", ci=True)
            registry = P.string_map(data, dpath, "registry", ci=True)
            registry["ce_source"] = ce_source
            out.append(
                ModelVersionEvent(
                    source=self.name,
                    kind=kind,
                    model=model,
                    version=version,
                    delivery_id=f"{ce_source}#{event_id}",
                    time=time,
                    tags=tags,
                    alias=alias,
                    artifact_uri=P.string(data, dpath, "artifact_uri", "artifactUri", "source", required=False, ci=True),
                    image_uri=P.string(data, dpath, "image_uri", "imageUri", "image", required=False, ci=True),
                    digest=P.string(data, dpath, "digest", required=False, ci=True),
                    approval_status=P.string(data, dpath, "approval_status", "approvalStatus", required=False, ci=True),
                    registry=registry,
                    source_event_type=event_type,
                )
            )
        return out


SOURCE = CloudEventsSource()
