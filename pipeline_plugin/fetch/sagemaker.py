"""SageMaker model packages and S3, through boto3.

``arn:aws:sagemaker:REGION:ACCOUNT:model-package/GROUP/VERSION`` -> ``DescribeModelPackage`` ->
``InferenceSpecification.Containers[0].ModelDataUrl`` (S3) -> downloaded. ``s3://BUCKET/KEY``: a
``.tar.gz``/``.tgz`` object is downloaded and unpacked (SageMaker's ``model.tar.gz``), another
object is downloaded as it is, a prefix (``s3://BUCKET/PREFIX/``, or a key with no object) is
downloaded whole. Credentials and endpoints are boto3's own (``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``
..., ``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_SAGEMAKER``, ``AWS_ENDPOINT_URL_S3``); the region is
the ARN's, else ``AWS_REGION``/``AWS_DEFAULT_REGION``.
"""

from __future__ import annotations

import re
import shutil
import tarfile
from pathlib import Path

from ..errors import ConfigError, NotFoundError, ServiceError
from . import FetchContext, missing_client

ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:([a-z0-9-]+):(\d{12}):model-package/([^/]+)(?:/(\d+))?$")
CHUNK = 8 * 1024 * 1024


def _boto3():
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        raise missing_client("SageMaker/S3", "boto3", "sagemaker") from None
    return boto3, botocore.exceptions


def _error_code(exc) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def model_data_url(arn: str, region: str | None = None) -> str:
    """The S3 URL of a model package version's files (its first container's ``ModelDataUrl``)."""
    boto3, errors = _boto3()
    m = ARN.match(arn)
    if not m or not m.group(4):
        raise ConfigError(f"model URI {arn!r}: expected arn:aws:sagemaker:REGION:ACCOUNT:model-package/GROUP/VERSION")
    client = boto3.client("sagemaker", region_name=region or m.group(1))
    try:
        desc = client.describe_model_package(ModelPackageName=arn)
    except errors.ClientError as exc:
        if _error_code(exc) in ("ValidationException", "ResourceNotFound", "ResourceNotFoundException"):
            raise NotFoundError(f"model URI {arn!r}: SageMaker has no such model package version "
                                f"({exc.response['Error'].get('Message', '')})") from exc
        raise ServiceError(f"SageMaker DescribeModelPackage {arn!r} failed: {exc}") from exc
    except errors.BotoCoreError as exc:
        raise ServiceError(f"SageMaker DescribeModelPackage {arn!r} failed: {exc} (credentials: AWS_PROFILE or "
                           "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; endpoint: AWS_ENDPOINT_URL_SAGEMAKER)") from exc
    containers = (desc.get("InferenceSpecification") or {}).get("Containers") or []
    url = containers[0].get("ModelDataUrl") if containers else None
    if not url:
        raise ConfigError(f"model URI {arn!r}: the model package has no InferenceSpecification.Containers[0].ModelDataUrl; "
                          "register it with its model artifacts (ModelDataUrl), or package its image instead")
    return url


def _safe_extract(archive: Path, dest: Path, uri: str) -> None:
    with tarfile.open(archive) as tar:
        try:
            tar.extractall(dest, filter="data")  # no absolute paths, no .., no links out, no devices
        except TypeError:  # Python without extraction filters (< 3.10.12)
            for member in tar.getmembers():
                target = (dest / member.name).resolve()
                if not target.is_relative_to(dest.resolve()) or member.issym() or member.islnk() or member.isdev():
                    raise ConfigError(f"model URI {uri!r}: the archive has an unsafe entry {member.name!r}")
            tar.extractall(dest)
        except tarfile.TarError as exc:
            raise ConfigError(f"model URI {uri!r}: the archive cannot be unpacked safely: {exc}") from exc


def download_s3(uri: str, dest: Path, ctx: FetchContext, region: str | None = None) -> Path:
    boto3, errors = _boto3()
    m = re.match(r"^s3://([^/]+)/?(.*)$", uri)
    if not m or not m.group(1):
        raise ConfigError(f"model URI {uri!r}: expected s3://BUCKET/KEY")
    bucket, key = m.group(1), m.group(2)
    s3 = boto3.client("s3", region_name=region)
    model = dest / "model"
    model.mkdir(parents=True, exist_ok=True)
    try:
        single = None
        if key and not key.endswith("/"):
            try:
                single = s3.head_object(Bucket=bucket, Key=key)
            except errors.ClientError as exc:
                if _error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                    raise
        if single is not None:
            name = key.rsplit("/", 1)[-1]
            size = int(single.get("ContentLength") or 0)
            target = dest / name
            _get(s3, bucket, key, target, size, ctx)
            if name.endswith((".tar.gz", ".tgz")):
                ctx.progress(f"unpacking {name}")
                _safe_extract(target, model, uri)
                target.unlink()
                return model
            shutil.rmtree(model)
            return target
        prefix = key if not key or key.endswith("/") else key + "/"
        count = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):]
                if not rel or rel.endswith("/"):
                    continue
                target = (model / rel).resolve()
                if not target.is_relative_to(model.resolve()):
                    raise ConfigError(f"model URI {uri!r}: object key {obj['Key']!r} leaves the download folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                _get(s3, bucket, obj["Key"], target, int(obj.get("Size") or 0), ctx)
                count += 1
        if not count:
            raise NotFoundError(f"model URI {uri!r}: no object and no objects under that prefix in bucket {bucket!r}")
        return model
    except errors.ClientError as exc:
        code = _error_code(exc)
        if code in ("NoSuchBucket", "404", "NoSuchKey"):
            raise NotFoundError(f"model URI {uri!r}: S3 answered {code}; check the bucket and key") from exc
        raise ServiceError(f"could not download {uri!r} from S3: {exc}") from exc
    except errors.BotoCoreError as exc:
        raise ServiceError(f"could not download {uri!r} from S3: {exc} (credentials: AWS_PROFILE or "
                           "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; endpoint: AWS_ENDPOINT_URL_S3)") from exc


def _get(s3, bucket: str, key: str, target: Path, size: int, ctx: FetchContext) -> None:
    done = [0, 0]  # bytes so far, last reported tenth

    def seen(n: int) -> None:
        done[0] += n
        tenth = done[0] * 10 // size if size else 10
        if tenth > done[1]:
            done[1] = tenth
            ctx.progress(f"s3://{bucket}/{key}: {done[0] // 1024} of {size // 1024} KiB")

    if size > CHUNK:
        ctx.progress(f"downloading s3://{bucket}/{key} ({size // 1024} KiB)")
    s3.download_file(bucket, key, str(target), Callback=seen if size > CHUNK else None)


class SageMakerBackend:
    name = "sagemaker"
    prefixes = ("arn:aws:sagemaker:", "arn:aws-cn:sagemaker:", "arn:aws-us-gov:sagemaker:", "s3://")
    extra = "sagemaker"

    def fetch(self, uri: str, dest: Path, ctx: FetchContext) -> Path:
        if uri.startswith("s3://"):
            ctx.progress(f"fetching {uri} from S3")
            return download_s3(uri, dest, ctx, ctx.registry.get("region") or None)
        url = model_data_url(uri)
        ctx.progress(f"fetching {uri}: its model data is {url}")
        m = ARN.match(uri)
        return download_s3(url, dest, ctx, m.group(1) if m else None)


BACKEND = SageMakerBackend()
