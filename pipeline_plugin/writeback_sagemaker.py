"""Write-back to SageMaker Model Registry through boto3: a model package version's
``CustomerMetadataProperties`` (the registry's own key-value metadata, shown in Studio's model
registry) under the same ``pipeline_plugin.*`` names as MLflow's tags: status, scoring URI, run URL,
image, updated at, reason (:class:`~pipeline_plugin.writeback.VersionTagWriter`).

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
from .writeback import VersionTagWriter, WritebackInfo


def _region(info: WritebackInfo) -> str:
    region = dict(info.registry).get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise ConfigError("cannot write back to SageMaker: the event names no region and AWS_REGION is not set; "
                          "set AWS_REGION to the model registry's region")
    return region


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise ConfigError("write-back to SageMaker needs boto3: pip install 'pipeline-plugin[sagemaker]'") from None
    return boto3


def _call(what: str, fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - botocore ClientError, NoCredentialsError, EndpointConnectionError
        raise ServiceError(f"SageMaker write-back failed to {what}: {exc}") from exc


def _arn(info: WritebackInfo, model: str, version: str) -> str:
    """The model package ARN of ``model`` (its group) version ``version``."""
    registry = dict(info.registry)
    group = registry.get("model_package_group") or model
    account = registry.get("account") or _call(
        "find the AWS account (sts get-caller-identity)",
        _boto3().client("sts", region_name=_region(info)).get_caller_identity)["Account"]
    return f"arn:aws:sagemaker:{_region(info)}:{account}:model-package/{group}/{version}"


class _SageMakerWriter(VersionTagWriter):
    name = "sagemaker"
    limit = 256  # SageMaker's longest CustomerMetadataProperties value
    written_key = "properties"

    def target(self, info: WritebackInfo) -> dict[str, Any]:
        return {"region": _region(info)}

    def set_tags(self, info: WritebackInfo, model: str, version: str, tags: dict[str, str]) -> dict[str, str]:
        client = _boto3().client("sagemaker", region_name=_region(info))
        arn = _arn(info, model, version)
        _call(f"update model package {arn}", client.update_model_package, ModelPackageArn=arn,
              CustomerMetadataProperties=tags)
        return tags


WRITER = _SageMakerWriter()
