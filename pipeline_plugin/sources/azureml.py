"""Azure Machine Learning through Event Grid (``POST /webhooks/azureml``).

Both output schemas of an Event Grid subscription are accepted, told apart per event:

* **Event Grid schema**: a JSON array of ``{id, topic, subject, eventType, eventTime, data}``
  (a single object is accepted too);
* **CloudEvents 1.0 schema**: structured mode, one event (``application/cloudevents+json``) or a
  batch (a JSON array), ``{specversion, id, source, subject, type, time, data}``.

Mapping: ``Microsoft.MachineLearningServices.ModelRegistered`` -> ``model_version.created``. Other
Azure ML events (``ModelDeployed``, ``RunCompleted``, ``RunStatusChanged``,
``DatasetDriftDetected``) and Event Grid's ``SubscriptionDeletedEvent`` give no event (recorded,
nothing started). Keys of ``data`` are read ignoring case (``modelName``/``ModelName``); versions
may be strings or integers. ``model``/``version`` fall back to ``subject`` (``models/<name>:<ver>``).
``registry`` = ``workspace``, ``subscription``, ``resource_group`` taken from ``topic`` (Event Grid)
or ``source`` (CloudEvents); ``artifact_uri`` is the model's Azure ML asset id
(``azureml://subscriptions/.../workspaces/<ws>/models/<name>/versions/<v>``) when the workspace is
known; ``tags`` = ``modelTags``; ``delivery_id`` = the event ``id`` (stable across Event Grid's
retries).

Authentication: scheme ``token``. Event Grid cannot sign, so put the token in the endpoint URL
(``https://host/webhooks/azureml?token=...``) or a delivery-attribute ``Authorization`` header.

Handshakes (see ``sources.receive`` for the order):

* Event Grid schema: ``Microsoft.EventGrid.SubscriptionValidationEvent`` -> HTTP 200
  ``{"validationResponse": <validationCode>}`` (Event Grid rejects 202). Event Grid POSTs it to the
  subscription's endpoint URL, ``?token=`` included, so it is answered only after the token was
  verified: a stranger cannot subscribe this listener to their topic.
* CloudEvents schema: ``OPTIONS`` abuse protection -> 200 with ``WebHook-Allowed-Origin`` echoing
  ``WebHook-Request-Origin`` (and ``WebHook-Allowed-Rate: *`` when a rate was requested). This is
  consent only, answered without a token; deliveries are still verified.
"""

from __future__ import annotations

import re
from typing import Any

from . import BaseSource, Request, Response, _payload as P, options_handshake
from ..errors import PayloadError
from ..events import ModelVersionEvent

MODEL_REGISTERED = "Microsoft.MachineLearningServices.ModelRegistered"
VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"

KINDS = {MODEL_REGISTERED.lower(): "model_version.created"}

_RESOURCE = re.compile(
    r"/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<resource_group>[^/]+)"
    r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<workspace>[^/]+)",
    re.IGNORECASE,
)
_SUBJECT = re.compile(r"^models/(?P<name>[^:/]+):(?P<version>[^:/]+)$")


def workspace_identity(resource_id: str | None) -> dict[str, str]:
    match = _RESOURCE.search(resource_id or "")
    return match.groupdict() if match else {}


def _events(request: Request) -> list[tuple[str, Any]]:
    """``(json path, event)`` pairs: ``[i]`` for an array, ``""`` for a single event object."""
    doc = request.json()
    if isinstance(doc, list):
        return [(f"[{i}]", item) for i, item in enumerate(doc)]
    if isinstance(doc, dict):
        return [("", doc)]
    raise PayloadError("the body must be an event object or an array of events", field="(body)")


class AzureMLSource(BaseSource):
    name = "azureml"
    auth_scheme = "token"

    def handshake(self, request: Request) -> Response | None:
        if request.method.upper() == "OPTIONS":
            return options_handshake(request)
        if not request.body:
            return None
        is_validation = str(request.headers.get("aeg-event-type", "")).lower() == "subscriptionvalidation"
        try:
            doc = request.json()
        except PayloadError:
            if is_validation:
                raise
            return None  # parse() reports it
        items = doc if isinstance(doc, list) else [doc]
        for index, item in enumerate(items):
            if isinstance(item, dict) and str(item.get("eventType", "")).lower() == VALIDATION.lower():
                path = f"[{index}]" if isinstance(doc, list) else ""
                data = P.obj_field(item, path, "data", required=True)
                code = P.string(data, P.join(path, "data"), "validationCode", ci=True)
                return Response(status=200, body={"validationResponse": code},
                                headers={"Content-Type": "application/json"})
        if is_validation:
            raise PayloadError("aeg-event-type is SubscriptionValidation but no SubscriptionValidationEvent "
                               "with data.validationCode is in the body", field="[0].eventType")
        return None

    def parse(self, request: Request) -> list[ModelVersionEvent]:
        out: list[ModelVersionEvent] = []
        for path, raw in _events(request):
            item = P.need_object(raw, path)
            if "specversion" in item:
                event_type = P.string(item, path, "type")
                resource = P.string(item, path, "source", required=False)
                time = P.string(item, path, "time", required=False)
            else:
                event_type = P.string(item, path, "eventType")
                resource = P.string(item, path, "topic", required=False)
                time = P.string(item, path, "eventTime", required=False)
            kind = KINDS.get(event_type.lower())
            if kind is None:
                continue
            event_id = P.string(item, path, "id")
            subject = P.string(item, path, "subject", required=False) or ""
            data_path = P.join(path, "data")
            data = P.obj_field(item, path, "data", required=True)

            from_subject = _SUBJECT.match(subject)
            name = P.string(data, data_path, "modelName", required=from_subject is None, ci=True)
            version = P.version(data, data_path, "modelVersion", required=from_subject is None, ci=True)
            name = name or from_subject.group("name")
            version = version or from_subject.group("version")
            tags = P.string_map(data, data_path, "modelTags", ci=True)
            P.string_map(data, data_path, "modelProperties", ci=True)  # type check only

            registry = workspace_identity(resource)
            artifact_uri = None
            if registry:
                artifact_uri = (
                    f"azureml://subscriptions/{registry['subscription']}/resourceGroups/"
                    f"{registry['resource_group']}/workspaces/{registry['workspace']}/models/{name}/versions/{version}"
                )
            out.append(
                ModelVersionEvent(
                    source=self.name,
                    kind=kind,
                    model=name,
                    version=version,
                    delivery_id=event_id,
                    time=time,
                    tags=tags,
                    artifact_uri=artifact_uri,
                    registry=registry,
                    source_event_type=event_type,
                )
            )
        return out


SOURCE = AzureMLSource()
