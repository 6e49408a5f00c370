"""Write-back to SageMaker Model Registry through boto3: a model package version's
``CustomerMetadataProperties`` (the registry's own key-value metadata, shown in Studio's model
registry) under the same ``pipeline_plugin.*`` names as MLflow's tags: status, scoring URI, run URL,
image, updated at, reason.

``ModelApprovalStatus`` is never changed: it is the people's gate (the listener starts pipelines
from it), not a deployment record. The model package state-change events these updates cause
arrive as duplicates of the approval already stored (same group, version and kind), so they start
nothing.

Credentials and endpoint come from boto3's usual chain (``AWS_ACCESS_KEY_ID``/profiles/roles,
``AWS_ENDPOINT_URL_SAGEMAKER``); the region and account from the event (``registry``), else
``AWS_REGION``/``AWS_DEFAULT_REGION`` and STS.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError, ServiceError
from .history import now_iso
from .writeback import TAG_IMAGE, TAG_REASON, TAG_RUN_URL, TAG_SCORING_URI, TAG_STATUS, TAG_UPDATED_AT, WritebackInfo

#: SageMaker's limit on a CustomerMetadataProperties value
MAX_VALUE = 256


def _region(info: WritebackInfo) -> str:
    region = dict(info.registry).get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise ConfigError("cannot write back to SageMaker: the event names no region and AWS_REGION is not set; "
                          "set AWS_REGION to the model registry's region")
    return region


def _client(info: WritebackInfo) -> Any:
    try:
        import boto3
    except ImportError:
        raise ConfigError("write-back to SageMaker needs boto3: pip install 'pipeline-plugin[sagemaker]'") from None
    return boto3.client("sagemaker", region_name=_region(info))


def _call(what: str, fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - botocore ClientError, NoCredentialsError, EndpointConnectionError
        raise ServiceError(f"SageMaker write-back failed to {what}: {exc}") from exc


def _arn(client: Any, info: WritebackInfo, model: str, version: str) -> str:
    """The model package ARN of ``model`` (its group) version ``version``."""
    registry = dict(info.registry)
    group = registry.get("model_package_group") or model
    account = registry.get("account")
    if not account:
        import boto3

        account = _call("find the AWS account (sts get-caller-identity)",
                        boto3.client("sts", region_name=_region(info)).get_caller_identity)["Account"]
    return f"arn:aws:sagemaker:{_region(info)}:{account}:model-package/{group}/{version}"


def _properties(status: str, info: WritebackInfo) -> dict[str, str]:
    props = {TAG_STATUS: status, TAG_UPDATED_AT: now_iso()}
    if info.scoring_uri:
        props[TAG_SCORING_URI] = info.scoring_uri
    if info.run_url:
        props[TAG_RUN_URL] = info.run_url
    if info.image:
        props[TAG_IMAGE] = info.image
    if info.reason:
        props[TAG_REASON] = info.reason
    return {k: v[:MAX_VALUE] for k, v in props.items()}


def _set(client: Any, info: WritebackInfo, model: str, version: str, props: dict[str, str]) -> dict[str, str]:
    arn = _arn(client, info, model, version)
    _call(f"update model package {arn}", client.update_model_package, ModelPackageArn=arn,
          CustomerMetadataProperties=props)
    return props


class _SageMakerWriter:
    name = "sagemaker"

    def production(self, model: str, version: str, previous_version: str | None, info: WritebackInfo) -> dict[str, Any]:
        client = _client(info)
        written: dict[str, Any] = {"region": _region(info), "properties": {}}
        written["properties"][version] = _set(client, info, model, version, _properties("production", info))
        if previous_version and previous_version != version:
            written["properties"][previous_version] = _set(
                client, info, model, previous_version, {TAG_STATUS: "previous-production", TAG_UPDATED_AT: now_iso()})
        return written

    def rollback(self, model: str, restored_version: str, from_version: str | None, before_restored: str | None,
                 info: WritebackInfo) -> dict[str, Any]:
        client = _client(info)
        written: dict[str, Any] = {"region": _region(info), "properties": {}}
        written["properties"][restored_version] = _set(client, info, model, restored_version,
                                                       _properties("production", info))
        if from_version and from_version != restored_version:
            gone = {TAG_STATUS: "rolled-back", TAG_UPDATED_AT: now_iso()}
            if info.reason:
                gone[TAG_REASON] = info.reason[:MAX_VALUE]
            written["properties"][from_version] = _set(client, info, model, from_version, gone)
        return written

    def status(self, model: str, version: str, status: str, info: WritebackInfo) -> dict[str, Any]:
        client = _client(info)
        return {"region": _region(info), "properties": {version: _set(client, info, model, version,
                                                                       _properties(status, info))}}


WRITER = _SageMakerWriter()
