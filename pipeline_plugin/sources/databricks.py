"""Databricks Workspace Model Registry webhooks (``POST /webhooks/databricks``).

Databricks POSTs a small JSON object (``event``, ``webhook_id``, ``event_timestamp`` in epoch
milliseconds, ``model_name``, ``version``, and per event ``to_stage``/``from_stage``, ``tags``,
``comment``, ``text``) signed with ``X-Databricks-Signature``: the hex HMAC-SHA256 of the raw body
under the webhook's ``http_url_spec.secret`` (scheme ``databricks-hmac``). A webhook that sets only
``http_url_spec.authorization: "Bearer <token>"`` can use ``auth: token`` in the listener config.

Mapping, ``event`` -> kind:

==============================================  ==================  ==================================
Databricks event                                kind                fields used
==============================================  ==================  ==================================
``MODEL_VERSION_CREATED``                       ``model_version.    model_name, version
                                                created``           (-> ``models:/NAME/VERSION``)
``MODEL_VERSION_TRANSITIONED_STAGE``,           ``alias.set``       alias = ``to_stage`` lower-cased
``MODEL_VERSION_TRANSITIONED_TO_STAGING`` /                         (``staging``, ``production``,
``_PRODUCTION`` / ``_ARCHIVED``                                     ``archived``); the event's own
                                                                    stage when ``to_stage`` is absent
... the same with ``to_stage: "None"``          ``alias.deleted``   alias = ``from_stage`` lower-cased
``TRANSITION_REQUEST_CREATED``,                 ``tag.set``         tag ``databricks.transition_request``
``TRANSITION_REQUEST_TO_STAGING_CREATED`` /                         = requested stage (a request is no
``_PRODUCTION_`` / ``_ARCHIVED_CREATED``                            approval: rules may act on it)
``MODEL_VERSION_TAG_SET``                       ``tag.set``         ``tags: [{key, value}]``
``REGISTERED_MODEL_CREATED``,                   none (answered,     -
``COMMENT_CREATED``, events added later         nothing stored)
==============================================  ==================  ==================================

A webhook subscribed to both ``MODEL_VERSION_TRANSITIONED_STAGE`` and ``..._TO_PRODUCTION`` sends
two deliveries for one transition; both give the same change and it is stored once.

Registry identity: the workspace host, from the listener config (``sources.databricks.options.host``,
e.g. ``https://adb-123.4.azuredatabricks.net``): ``registry = {"host": <netloc>, "tracking_uri":
"databricks"}`` (the stages reach the workspace through MLflow's ``databricks`` URI with
``DATABRICKS_HOST``/``DATABRICKS_TOKEN``). Payloads carry no artifact location (Databricks leaves it
out on purpose); ``artifact_uri`` is ``models:/NAME/VERSION``.

``delivery_id``: Databricks sends no delivery id header; the body (which holds ``webhook_id`` and
the millisecond ``event_timestamp``) is digested, so a retry of the same delivery has the same id.

Test mode: a webhook created with ``status: TEST_MODE`` is only triggered by
``POST /api/2.0/mlflow/registry-webhooks/test``, whose mock event looks like a real one. Such
deliveries are recorded with ``is_test=True`` (never deployed) when the webhook's URL carries
``?test=true`` (point the TEST_MODE webhook at ``/webhooks/databricks?test=true``), or its
``webhook_id`` is listed in ``sources.databricks.options.test_webhook_ids``. The query is outside
the signature, so it can only lower a delivery to a test; a delivery marked so gets a delivery id of
its own (``#test``), so it is never taken for a retry of the unmarked delivery, and a test event is
never taken for the real change of the same version (the inbox keys them apart).
"""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import urlsplit

from ..errors import PayloadError
from ..events import ModelVersionEvent
from . import BaseSource, Request
from . import _payload as P

CREATED = "MODEL_VERSION_CREATED"
TAG_SET = "MODEL_VERSION_TAG_SET"
#: transition events -> the stage their name implies (None: read ``to_stage``)
TRANSITIONS = {
    "MODEL_VERSION_TRANSITIONED_STAGE": None,
    "MODEL_VERSION_TRANSITIONED_TO_STAGING": "Staging",
    "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION": "Production",
    "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED": "Archived",
}
REQUESTS = {
    "TRANSITION_REQUEST_CREATED": None,
    "TRANSITION_REQUEST_TO_STAGING_CREATED": "Staging",
    "TRANSITION_REQUEST_TO_PRODUCTION_CREATED": "Production",
    "TRANSITION_REQUEST_TO_ARCHIVED_CREATED": "Archived",
}
#: documented events that name no model version to act on
NO_VERSION = ("REGISTERED_MODEL_CREATED", "COMMENT_CREATED")
EVENTS = (CREATED, TAG_SET, *TRANSITIONS, *REQUESTS, *NO_VERSION)
STAGES = ("None", "Staging", "Production", "Archived")
REQUEST_TAG = "databricks.transition_request"


def _stage(body: dict, key: str, required: bool) -> str | None:
    value = P.string(body, "", key, required=required)
    if value is None:
        return None
    for stage in STAGES:
        if value.lower() == stage.lower():
            return stage
    raise PayloadError(f"{key} is {value!r}; a Databricks stage is one of {', '.join(STAGES)}", field=key)


def _time(body: dict) -> str | None:
    field, value = P.get(body, "", "event_timestamp")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**15:
        raise PayloadError(f"{field} must be epoch milliseconds (an integer), got {value!r}", field=field)
    return datetime.fromtimestamp(value / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _host(request: Request) -> str | None:
    host = (request.options or {}).get("host")
    if not isinstance(host, str) or not host.strip():
        return None
    host = host.strip()
    if "//" in host:
        return urlsplit(host).netloc or host
    return host.rstrip("/")


def _marked_test(request: Request, webhook_id: str | None) -> tuple[bool, bool]:
    """(is a test delivery, marked so by the URL query)."""
    raw = (request.query or {}).get("test")
    if isinstance(raw, (list, tuple)):
        raw = raw[0] if raw else None
    by_query = isinstance(raw, str) and raw.lower() in ("1", "true", "yes")
    listed = (request.options or {}).get("test_webhook_ids") or []
    by_id = bool(webhook_id) and isinstance(listed, (list, tuple)) and webhook_id in listed
    return by_query or by_id, by_query


class DatabricksSource(BaseSource):
    name = "databricks"
    auth_scheme = "databricks-hmac"

    def parse(self, request: Request) -> list[ModelVersionEvent]:
        body = P.need_object(request.json(), "")
        event_type = P.string(body, "", "event")
        if event_type not in EVENTS:
            return []  # an event Databricks added after this was written: nothing to act on
        webhook_id = P.string(body, "", "webhook_id", required=False)
        when = _time(body)
        P.string(body, "", "text", required=False)  # type check only
        if event_type in NO_VERSION:
            P.string(body, "", "model_name")  # type check only
            return []
        name = P.string(body, "", "model_name")
        version = P.version(body, "", "version")

        tags: dict[str, str] = {}
        alias = None
        artifact_uri = None
        if event_type == CREATED:
            kind = "model_version.created"
            artifact_uri = f"models:/{name}/{version}"
        elif event_type == TAG_SET:
            kind = "tag.set"
            for index, raw in enumerate(P.list_field(body, "", "tags", required=True)):
                path = f"tags[{index}]"
                item = P.need_object(raw, path)
                key = P.string(item, path, "key")
                field, value = P.get(item, path, "value")
                if value is not None and not isinstance(value, str):
                    raise PayloadError(f"{field} must be a string", field=field)
                tags[key] = value or ""
            if not tags:
                raise PayloadError("tags is empty; MODEL_VERSION_TAG_SET names at least one tag", field="tags")
        elif event_type in TRANSITIONS:
            to_stage = _stage(body, "to_stage", required=TRANSITIONS[event_type] is None) or TRANSITIONS[event_type]
            from_stage = _stage(body, "from_stage", required=False)
            if to_stage == "None":
                if not from_stage or from_stage == "None":
                    raise PayloadError(
                        "from_stage is missing; a transition to stage None must say which stage the version left",
                        field="from_stage",
                    )
                kind, alias = "alias.deleted", from_stage.lower()
            else:
                kind, alias = "alias.set", to_stage.lower()
            tags = {"databricks.from_stage": from_stage or "", "databricks.to_stage": to_stage}
        else:
            stage = _stage(body, "to_stage", required=REQUESTS[event_type] is None) or REQUESTS[event_type]
            _stage(body, "from_stage", required=False)
            kind = "tag.set"
            tags = {REQUEST_TAG: stage}

        registry: dict[str, str] = {}
        host = _host(request)
        if host:
            registry = {"host": host, "tracking_uri": "databricks"}
        is_test, by_query = _marked_test(request, webhook_id)
        delivery_id = P.body_digest(request.body) + ("#test" if by_query else "")
        return [
            ModelVersionEvent(
                source=self.name,
                kind=kind,
                model=name,
                version=version,
                delivery_id=delivery_id,
                time=when,
                tags=tags,
                alias=alias,
                artifact_uri=artifact_uri,
                registry=registry,
                is_test=is_test,
                source_event_type=event_type,
            )
        ]


SOURCE = DatabricksSource()
