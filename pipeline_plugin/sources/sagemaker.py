"""Amazon SageMaker Model Registry through EventBridge (``POST /webhooks/sagemaker``).

EventBridge cannot POST to a URL by itself: create a rule matching
``{"source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"]}`` whose
target is an *API destination* with this listener's URL, no input transformer. Authentication is
scheme ``token``: give the API destination's Connection an API key (any header name, e.g.
``x-api-key``, told to the listener with ``options: {token_header: x-api-key}`` in the server
config; or ``Authorization`` with value ``Bearer <token>``), or Basic auth with the token as the
password.

SageMaker may send several events for one change (``ModelPackageStatus`` moving from
``InProgress`` to ``Completed``, metadata updates) and only ``detail.ModelApprovalStatus`` says
whether a version is approved. Mapping, per event:

* ``ModelPackageStatus`` ``Completed`` and ``ModelApprovalStatus`` ``Approved`` -> ``model_version.approved``
* ``Completed`` and ``Rejected`` -> ``model_version.rejected``
* ``Completed`` and ``PendingManualApproval`` -> ``model_version.created``
* ``Deleting`` -> ``model_version.deleted``
* ``Pending``, ``InProgress``, ``Failed`` -> no event (not a usable version yet, or never)

A version registered already ``Approved`` (common in SageMaker Pipelines) yields only
``model_version.approved``; write approval rules on that kind. Repeated events for the same state
(retries, metadata edits) normalise to the same ``dedupe_key`` and are stored once.
Unversioned model packages (no ``ModelPackageGroupName``) and other ``detail-type`` values give no
event.

Fields: ``model`` = ``ModelPackageGroupName``, ``version`` = ``str(ModelPackageVersion)``,
``registry`` = ``model_package_group``, ``account``, ``region``; ``artifact_uri`` = the first
container's ``ModelDataUrl``; ``image_uri``/``digest`` = its ``Image``/``ImageDigest``;
``tags`` = ``CustomerMetadataProperties``; ``approval_status`` = ``ModelApprovalStatus``;
``delivery_id`` = the EventBridge event ``id`` (kept across EventBridge retries).
"""

from __future__ import annotations

from . import BaseSource, Request, _payload as P
from ..events import ModelVersionEvent

DETAIL_TYPE = "SageMaker Model Package State Change"

APPROVAL_KINDS = {
    "approved": "model_version.approved",
    "rejected": "model_version.rejected",
    "pendingmanualapproval": "model_version.created",
}


class SageMakerSource(BaseSource):
    name = "sagemaker"
    auth_scheme = "token"

    def parse(self, request: Request) -> list[ModelVersionEvent]:
        body = P.need_object(request.json(), "")
        detail_type = P.string(body, "", "detail-type")
        if detail_type != DETAIL_TYPE:
            return []
        event_id = P.string(body, "", "id")
        detail = P.obj_field(body, "", "detail", required=True)
        group = P.string(detail, "detail", "ModelPackageGroupName", required=False)
        if group is None:
            return []  # an unversioned model package: no registry version to act on
        status = (P.string(detail, "detail", "ModelPackageStatus", required=False) or "").lower()
        approval = P.string(detail, "detail", "ModelApprovalStatus", required=False)
        if status == "deleting":
            kind = "model_version.deleted"
        elif status == "completed":
            kind = APPROVAL_KINDS.get((approval or "").lower())
            if kind is None:
                return []
        else:
            return []
        version = P.version(detail, "detail", "ModelPackageVersion")

        registry = {"model_package_group": group}
        for key in ("account", "region"):
            value = P.string(body, "", key, required=False)
            if value:
                registry[key] = value

        artifact_uri = image_uri = digest = None
        spec = P.obj_field(detail, "detail", "InferenceSpecification")
        containers = P.list_field(spec, "detail.InferenceSpecification", "Containers")
        if containers:
            path = "detail.InferenceSpecification.Containers[0]"
            first = P.need_object(containers[0], path)
            artifact_uri = P.string(first, path, "ModelDataUrl", required=False)
            image_uri = P.string(first, path, "Image", required=False)
            digest = P.string(first, path, "ImageDigest", required=False)

        return [
            ModelVersionEvent(
                source=self.name,
                kind=kind,
                model=group,
                version=version,
                delivery_id=event_id,
                time=P.string(body, "", "time", required=False),
                tags=P.string_map(detail, "detail", "CustomerMetadataProperties"),
                artifact_uri=artifact_uri,
                image_uri=image_uri,
                digest=digest,
                registry=registry,
                approval_status=approval,
                source_event_type=f"{detail_type}: {status or '?'}/{approval or '?'}",
            )
        ]


SOURCE = SageMakerSource()
