"""MLflow 3.x model-registry webhooks (``POST /webhooks/mlflow``).

MLflow POSTs ``{"entity", "action", "timestamp", "data"[, "workspace"]}`` signed with
``X-MLflow-Signature`` (scheme ``mlflow-hmac``). Mapping, ``entity.action`` -> kind:

====================================  =========================  ==============================
MLflow event                          kind                       fields used
====================================  =========================  ==============================
``model_version.created``             ``model_version.created``  name, version, source
                                                                 (-> artifact_uri), tags, run_id
``model_version_tag.set``             ``tag.set``                name, version, {key: value}
``model_version_tag.deleted``         ``tag.deleted``            name, version, {key: ""}
``model_version_alias.created``       ``alias.set``              name, version, alias
``model_version_alias.deleted``       ``alias.deleted``          name, alias; version ``"*"``
                                                                 (MLflow does not say which)
``registered_model.created``, prompt  none (recorded, no event)  -
and budget events
====================================  =========================  ==============================

``registry`` holds ``tracking_uri`` when known: ``request.options["tracking_uri"]`` (server
config) or the webhook URL's ``?tracking_uri=`` query, which must name a server the config lists
(``tracking_uri`` or ``tracking_uris``: the query is outside MLflow's signature); plus
``workspace`` when MLflow runs with workspaces. ``delivery_id`` is ``X-MLflow-Delivery-Id`` (stable across MLflow's retries).

MLflow's "test webhook" button (``mlflow.webhooks.delivery.test_webhook``) sends a fixed example
payload for model ``example_model`` with a valid signature and nothing marking it as a test. Such a
delivery is recognised by its example content (the model name ``example_model`` plus the example
tag/alias/key, see ``EXAMPLE_PAYLOADS``) and parsed with ``is_test=True``: it is recorded, never
deployed.
"""

from __future__ import annotations

from . import BaseSource, Request, _payload as P
from ..errors import PayloadError
from ..events import ModelVersionEvent

KINDS = {
    ("model_version", "created"): "model_version.created",
    ("model_version_tag", "set"): "tag.set",
    ("model_version_tag", "deleted"): "tag.deleted",
    ("model_version_alias", "created"): "alias.set",
    ("model_version_alias", "deleted"): "alias.deleted",
}

#: The ``data`` MLflow 3.17's ``test_webhook`` sends per event (``mlflow/webhooks/types.py``,
#: ``*.example()``); a test checks these against the installed MLflow.
EXAMPLE_PAYLOADS: dict[str, dict] = {
    "registered_model.created": {
        "name": "example_model",
        "tags": {"example_key": "example_value"},
        "description": "An example registered model",
    },
    "model_version.created": {
        "name": "example_model",
        "version": "1",
        "source": "models:/123",
        "run_id": "abcd1234abcd5678",
        "tags": {"example_key": "example_value"},
        "description": "An example model version",
    },
    "model_version_tag.set": {"name": "example_model", "version": "1", "key": "example_key", "value": "example_value"},
    "model_version_tag.deleted": {"name": "example_model", "version": "1", "key": "example_key"},
    "model_version_alias.created": {"name": "example_model", "alias": "example_alias", "version": "1"},
    "model_version_alias.deleted": {"name": "example_model", "alias": "example_alias"},
}

#: version used for ``alias.deleted``: MLflow's payload names the alias but not the version
ANY_VERSION = "*"


def is_example_delivery(event_type: str, data: dict) -> bool:
    """True for MLflow's ``test_webhook`` example payload (exact, or the example markers)."""
    if data.get("name") != "example_model":
        return False
    if EXAMPLE_PAYLOADS.get(event_type) == data:
        return True
    return (
        data.get("tags") == {"example_key": "example_value"}
        or data.get("key") == "example_key"
        or data.get("alias") == "example_alias"
    )


class MlflowSource(BaseSource):
    name = "mlflow"
    auth_scheme = "mlflow-hmac"

    def parse(self, request: Request) -> list[ModelVersionEvent]:
        body = P.need_object(request.json(), "")
        entity = P.string(body, "", "entity")
        action = P.string(body, "", "action")
        event_type = f"{entity}.{action}"
        data = P.obj_field(body, "", "data", required=True)
        kind = KINDS.get((entity, action))
        if kind is None:
            return []  # registered models, prompts, budgets: no model version to act on

        name = P.string(data, "data", "name")
        if kind == "alias.deleted":
            version = P.version(data, "data", "version", required=False) or ANY_VERSION
        else:
            version = P.version(data, "data", "version")
        tags: dict[str, str] = {}
        alias = None
        artifact_uri = None
        if kind == "model_version.created":
            tags = P.string_map(data, "data", "tags")
            artifact_uri = P.string(data, "data", "source", required=False)
            P.string(data, "data", "run_id", required=False)  # type check only
        elif kind == "tag.set":
            key = P.string(data, "data", "key")
            field, value = P.get(data, "data", "value")
            if value is not None and not isinstance(value, str):
                raise PayloadError(f"{field} must be a string", field=field)
            tags = {key: value or ""}
        elif kind == "tag.deleted":
            tags = {P.string(data, "data", "key"): ""}
        else:
            alias = P.string(data, "data", "alias")

        registry: dict[str, str] = {}
        tracking_uri, from_query = _tracking_uri(request)
        if tracking_uri:
            registry["tracking_uri"] = tracking_uri
        workspace = P.string(body, "", "workspace", required=False)
        if workspace:
            registry["workspace"] = workspace

        delivery_id = request.headers.get("X-MLflow-Delivery-Id") or P.body_digest(request.body)
        if from_query:
            # the query is outside the signature: a delivery replayed with another allowed server's
            # URI is a delivery of its own, never the duplicate that swallows the genuine one
            delivery_id = f"{delivery_id}@{tracking_uri}"
        return [
            ModelVersionEvent(
                source=self.name,
                kind=kind,
                model=name,
                version=version,
                delivery_id=str(delivery_id),
                time=P.string(body, "", "timestamp", required=False),
                tags=tags,
                alias=alias,
                artifact_uri=artifact_uri,
                registry=registry,
                is_test=is_example_delivery(event_type, data),
                source_event_type=event_type,
            )
        ]


def _query(request: Request, name: str) -> str | None:
    value = (request.query or {}).get(name)
    return value if isinstance(value, str) else None


def _tracking_uri(request: Request) -> tuple[str | None, bool]:
    """The MLflow server a delivery came from, and whether the webhook URL's query named it.

    MLflow signs ``delivery_id.timestamp.body``, not the URL: a ``?tracking_uri=`` could be changed
    by whoever replays a captured delivery, and the stages download from (and send MLflow's
    credentials to) that address. So the query only picks among the servers the listener's config
    names (``tracking_uri``, ``tracking_uris``); any other value is refused."""
    options = request.options or {}
    configured = options.get("tracking_uri") if isinstance(options.get("tracking_uri"), str) else None
    allowed = [u for u in (options.get("tracking_uris") or []) if isinstance(u, str)]
    if configured:
        allowed.append(configured)
    asked = _query(request, "tracking_uri")
    if not asked:
        return configured or None, False
    if asked.rstrip("/") not in {u.rstrip("/") for u in allowed}:
        listed = ", ".join(sorted(set(allowed))) or "none"
        raise PayloadError(
            f"?tracking_uri={asked!r} is not a server the listener's config names (allowed: {listed}); the "
            "query is not covered by MLflow's signature, so list the server under sources.mlflow.tracking_uris "
            "(or set sources.mlflow.tracking_uri) in the listener config",
            field="?tracking_uri",
        )
    return asked, True


SOURCE = MlflowSource()
