"""SageMaker model packages and S3 through boto3 against moto's server (a real S3 and SageMaker API
emulator on loopback): the ARN -> DescribeModelPackage -> ModelDataUrl -> model.tar.gz unpacked;
s3:// objects and prefixes; a missing version is named."""

from __future__ import annotations

import io
import tarfile

import pytest

from pipeline_plugin.errors import ConfigError, NotFoundError
from pipeline_plugin.fetch import fetch
from tests.services import sagemaker_api


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def aws(tmp_path, monkeypatch):
    import boto3

    with sagemaker_api(tmp_path) as api:
        for name, value in (("AWS_ENDPOINT_URL", api.url), ("AWS_ACCESS_KEY_ID", "testing"),
                            ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", "eu-west-1")):
            monkeypatch.setenv(name, value)
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield boto3.client("sagemaker", region_name="eu-west-1"), s3


def test_model_package_arn_is_fetched_and_unpacked(aws, tmp_path):
    sm, s3 = aws
    s3.put_object(Bucket="models", Key="credit/2/model.tar.gz",
                  Body=_tar_gz({"model.pkl": b"weights-2", "code/requirements.txt": b"xgboost\n", "requirements.txt": b"scikit-learn\n"}))
    sm.create_model_package_group(ModelPackageGroupName="credit")
    spec = {"Containers": [{"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/credit:1"}],
            "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]}
    sm.create_model_package(ModelPackageGroupName="credit", InferenceSpecification=spec)
    spec["Containers"][0]["ModelDataUrl"] = "s3://models/credit/2/model.tar.gz"
    arn = sm.create_model_package(ModelPackageGroupName="credit", InferenceSpecification=spec)["ModelPackageArn"]
    assert arn.endswith("model-package/credit/2")
    said: list[str] = []
    got = fetch(arn, tmp_path / "dest", progress=said.append)
    assert got.backend == "sagemaker" and got.path == tmp_path / "dest" / "model"
    assert (got.path / "model.pkl").read_bytes() == b"weights-2"
    assert got.requirements == got.path / "requirements.txt"
    assert not (tmp_path / "dest" / "model.tar.gz").exists()
    assert any("s3://models/credit/2/model.tar.gz" in line for line in said)
    # version 1 has no model data: named, with the fix
    with pytest.raises(ConfigError, match="no InferenceSpecification.Containers\\[0\\].ModelDataUrl"):
        fetch(arn[: -1] + "1", tmp_path / "v1")
    with pytest.raises(NotFoundError, match="credit/7"):
        fetch(arn[: -1] + "7", tmp_path / "v7")


def test_s3_objects_and_prefixes(aws, tmp_path):
    _sm, s3 = aws
    s3.put_object(Bucket="models", Key="onnx/3/model.onnx", Body=b"onnx-bytes")
    s3.put_object(Bucket="models", Key="folder/4/MLmodel", Body=b"flavors: {}\n")
    s3.put_object(Bucket="models", Key="folder/4/sub/model.pkl", Body=b"w4")
    one = fetch("s3://models/onnx/3/model.onnx", tmp_path / "one")
    assert one.path == tmp_path / "one" / "model.onnx" and one.path.read_bytes() == b"onnx-bytes"
    for uri in ("s3://models/folder/4", "s3://models/folder/4/"):
        got = fetch(uri, tmp_path / uri[-2:].strip("/"))
        assert (got.path / "MLmodel").is_file() and (got.path / "sub" / "model.pkl").read_bytes() == b"w4"
    with pytest.raises(NotFoundError, match="s3://models/nothing/here"):
        fetch("s3://models/nothing/here", tmp_path / "none")
    # an archive entry that would leave the folder is refused
    s3.put_object(Bucket="models", Key="evil/model.tar.gz", Body=_tar_gz({"../escape.txt": b"x"}))
    with pytest.raises(ConfigError, match="cannot be unpacked safely"):
        fetch("s3://models/evil/model.tar.gz", tmp_path / "evil")
    assert not (tmp_path / "escape.txt").exists()
