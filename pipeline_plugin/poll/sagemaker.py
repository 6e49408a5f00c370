"""SageMaker Model Registry through boto3: ``ListModelPackages`` with the approval status.

* ``ListModelPackageGroups`` when ``model_package_groups: all`` (the default), else the listed groups;
* ``ListModelPackages(ModelPackageGroupName=G, ModelPackageType=Versioned)``, paged: each version's
  ``ModelPackageStatus`` and ``ModelApprovalStatus`` give the kind exactly as the EventBridge source
  maps them (``Completed`` + ``Approved`` -> ``model_version.approved``, + ``Rejected`` ->
  ``model_version.rejected``, + ``PendingManualApproval`` -> ``model_version.created``; ``Deleting``
  -> ``model_version.deleted``; other states: nothing yet). A version approved while the poller was
  away is announced as approved.
* ``DescribeModelPackage`` once per new (version, approval) for the fields the stages use:
  ``artifact_uri`` (``ModelDataUrl``), ``image_uri``/``digest``, ``tags``
  (``CustomerMetadataProperties``).

``registry`` = ``model_package_group``, ``account`` and ``region`` (from the package ARN), as in
EventBridge events. Region: ``region``, else boto3's (``AWS_REGION``/``AWS_DEFAULT_REGION``);
credentials and endpoints are boto3's own (``AWS_ENDPOINT_URL_SAGEMAKER``, ``AWS_ENDPOINT_URL_STS``
...). The poll state is kept per account and region (the account from ``sts:GetCallerIdentity``,
which needs no permission): two accounts polled in one region into one inbox are two registries.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from ..errors import ConfigError, ServiceError
from ..events import ModelVersionEvent
from ..fetch.sagemaker import ARN, _boto3
from ..sources.sagemaker import APPROVAL_KINDS
from . import delivery_id, names_option, string_option

KEYS = ("region", "model_package_groups")


def validate(options: Mapping[str, Any], where: str) -> None:
    string_option(options, "region", where)
    names_option(options, "model_package_groups", where)


def kind_of(status: str, approval: str) -> str | None:
    status = (status or "").lower()
    if status == "deleting":
        return "model_version.deleted"
    if status == "completed":
        return APPROVAL_KINDS.get((approval or "").lower())
    return None


class SageMakerPoller:
    name = "sagemaker"
    event_source = "sagemaker"

    def __init__(self, region: str | None, groups: list[str] | None) -> None:
        self.region = region
        self.groups = groups
        self._details: dict[tuple[str, str], dict[str, Any]] = {}
        self._client = None
        self._account: str | None = None

    def describe(self) -> str:
        return f"SageMaker in {self.region or 'the default region'}"

    def identity(self) -> str:
        # the account and the region: another account's registry in this region is another one
        # (a poll state an older release kept under describe() is taken over once)
        return f"SageMaker account {self.account()} in {self.client().meta.region_name}"

    def account(self) -> str:
        """The AWS account the credentials belong to (asked once)."""
        if self._account is None:
            boto3, errors = _boto3()
            try:
                sts = boto3.client("sts", region_name=self.client().meta.region_name)
                self._account = str(sts.get_caller_identity()["Account"])
            except (errors.ClientError, errors.BotoCoreError) as exc:
                raise ServiceError(f"{self.describe()}: could not tell the AWS account of these credentials "
                                   f"(sts:GetCallerIdentity): {exc}") from exc
        return self._account

    @property
    def models(self) -> list[str] | None:
        return self.groups

    def client(self):
        if self._client is None:
            boto3, _ = _boto3()
            try:
                self._client = boto3.client("sagemaker", region_name=self.region)
            except Exception as exc:  # noqa: BLE001 - NoRegionError ...
                raise ConfigError(f"poll.sagemaker: cannot make a SageMaker client: {exc} (set poll.sagemaker.region "
                                  "or AWS_REGION)") from exc
        return self._client

    def list_versions(self) -> Iterator[ModelVersionEvent]:
        _, errors = _boto3()
        try:
            yield from self._list(self.client())
        except (errors.ClientError, errors.BotoCoreError) as exc:
            raise ServiceError(f"{self.describe()}: could not list model packages: {exc}") from exc

    def _group_names(self, client) -> Iterator[str]:
        if self.groups is not None:
            yield from self.groups
            return
        for page in client.get_paginator("list_model_package_groups").paginate():
            for group in page.get("ModelPackageGroupSummaryList") or []:
                yield group["ModelPackageGroupName"]

    def _list(self, client) -> Iterator[ModelVersionEvent]:
        for group in self._group_names(client):
            pages = client.get_paginator("list_model_packages").paginate(
                ModelPackageGroupName=group, ModelPackageType="Versioned")
            for page in pages:
                for summary in page.get("ModelPackageSummaryList") or []:
                    event = self._event(client, group, summary)
                    if event is not None:
                        yield event

    def _event(self, client, group: str, summary: Mapping[str, Any]) -> ModelVersionEvent | None:
        approval = str(summary.get("ModelApprovalStatus") or "")
        kind = kind_of(str(summary.get("ModelPackageStatus") or ""), approval)
        version = summary.get("ModelPackageVersion")
        arn = str(summary.get("ModelPackageArn") or "")
        if kind is None or version is None:
            return None
        registry = {"model_package_group": group}
        m = ARN.match(arn)
        if m:
            registry.update(region=m.group(1), account=m.group(2))
        details = self._describe(client, arn, approval) if kind != "model_version.deleted" else {}
        created = summary.get("CreationTime")
        return ModelVersionEvent(
            source=self.event_source, kind=kind, model=group, version=str(version),
            delivery_id=delivery_id(self.event_source, arn, kind),
            time=created.isoformat() if hasattr(created, "isoformat") else None,
            approval_status=approval or None, registry=registry,
            source_event_type=f"poll: ListModelPackages {summary.get('ModelPackageStatus')}/{approval}", **details,
        )

    def _describe(self, client, arn: str, approval: str) -> dict[str, Any]:
        key = (arn, approval)
        if key not in self._details:
            desc = client.describe_model_package(ModelPackageName=arn)
            containers = (desc.get("InferenceSpecification") or {}).get("Containers") or [{}]
            first = containers[0] or {}
            self._details[key] = {
                "artifact_uri": first.get("ModelDataUrl"),
                "image_uri": first.get("Image"),
                "digest": first.get("ImageDigest"),
                "tags": {str(k): str(v) for k, v in (desc.get("CustomerMetadataProperties") or {}).items()},
            }
        return self._details[key]


def build(options: Mapping[str, Any], where: str) -> SageMakerPoller:
    return SageMakerPoller(string_option(options, "region", where), names_option(options, "model_package_groups", where))
