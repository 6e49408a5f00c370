"""Real Docker: package the example model shipped in the repo, run the image, score it, rebuild for a
new model version (dependency layers reused), generate-dockerfile + `docker build` equivalence,
non-root user, labels, HEALTHCHECK, SIGTERM with a request in flight, several models, no-code MLflow.

Needs the Docker Engine and the base image (`bash scripts/services.sh base-image`); fails without.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from pipeline_plugin.builders import docker as builder
from pipeline_plugin.stages.package import ModelRef, PackageSpec, package

from tests.conftest import unused_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "churn"
SUFFIX = uuid.uuid4().hex[:8]


def example_spec(version: str = "1", model: Path = EXAMPLE / "model.pkl", **kw) -> PackageSpec:
    values = dict(
        models=[ModelRef("churn", version, model)],
        image=f"pp-test-churn-{SUFFIX}:{version}",
        entry_script=EXAMPLE / "score.py",
        requirements=EXAMPLE / "requirements.txt",
        source="mlflow",
        registry="http://127.0.0.1:5000",
    )
    values.update(kw)
    return PackageSpec(**values)


@pytest.fixture(scope="module")
def built(docker_client, base_image):
    """Images this module builds are removed at the end (their parent layers stay as build cache)."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        try:
            docker_client.images.remove(tag, noprune=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


@pytest.fixture(scope="module")
def example(built, base_image):
    lines: list[str] = []
    spec = example_spec(base_image=base_image)
    result = package(spec, lines.append)
    built.append(result.image)
    return result, lines


class Running:
    def __init__(self, container, port: int):
        self.container = container
        self.url = f"http://127.0.0.1:{port}"


def start(docker_client, image: str, **kw) -> Running:
    port = unused_port()
    container = docker_client.containers.run(
        image, detach=True, name=f"pp-test-{uuid.uuid4().hex[:10]}", ports={"5001/tcp": ("127.0.0.1", port)}, **kw
    )
    running = Running(container, port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(running.url + "/readyz", timeout=2).status_code == 200:
                return running
        except httpx.HTTPError:
            pass
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.3)
    logs = container.logs().decode(errors="replace")
    container.remove(force=True)
    pytest.fail(f"{image} did not become ready within 60 s; logs:\n{logs}")


def stop(running: Running) -> None:
    try:
        running.container.remove(force=True)
    except Exception:  # noqa: BLE001
        pass


def test_example_image_scores_the_sample_and_serves_swagger(docker_client, example):
    result, lines = example
    assert result.image_id.startswith("sha256:")
    assert any(line.startswith("Step ") for line in lines), "build progress was shown"
    running = start(docker_client, result.image)
    try:
        sample = json.loads((EXAMPLE / "sample.json").read_text())
        expected = json.loads((EXAMPLE / "expected.json").read_text())
        response = httpx.post(running.url + "/score", json=sample, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["predictions"] == expected["predictions"]
        assert body["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
        assert httpx.get(running.url + "/", timeout=5).text.strip().strip('"') == "Healthy"
        swagger = httpx.get(running.url + "/swagger.json", params={"version": "3"}, timeout=5).json()
        assert "/score" in swagger["paths"]
        # the server process itself (PID 1) runs as the non-root user
        top = running.container.top(ps_args="-o uid,pid,comm")
        uids = {row[0] for row in top["Processes"]}
        assert uids == {"10001"}, top
        assert running.container.exec_run(["id", "-un"]).output.decode().strip() == "model"
    finally:
        stop(running)


def test_image_labels_healthcheck_and_config(docker_client, example):
    result, _ = example
    attrs = docker_client.images.get(result.image).attrs
    config = attrs["Config"]
    labels = config["Labels"]
    assert labels["io.pipeline-plugin.model.name"] == "churn"
    assert labels["io.pipeline-plugin.model.version"] == "1"
    assert labels["io.pipeline-plugin.model.source"] == "mlflow"
    assert labels["io.pipeline-plugin.model.registry"] == "http://127.0.0.1:5000"
    assert labels["io.pipeline-plugin.model.digest"] == builder.model_digest([ModelRef("churn", "1", EXAMPLE / "model.pkl")])
    assert labels["io.pipeline-plugin.model.digest"] == result.model_digest
    assert labels["io.pipeline-plugin.plugin-version"]
    assert labels["org.opencontainers.image.title"] == "churn"
    assert result.labels == {k: v for k, v in labels.items() if k in result.labels}
    assert config["User"] == "10001:10001"
    assert "5001/tcp" in config["ExposedPorts"]
    assert config["StopSignal"] == "SIGTERM"
    assert "AZUREML_MODEL_DIR=/var/azureml-app/azureml-models/churn/1" in config["Env"]
    assert any("/readyz" in part for part in config["Healthcheck"]["Test"])


def test_healthcheck_probe_reports_healthy(docker_client, example):
    """The image's own probe command (python, no curl in the image) turns the container healthy."""
    result, _ = example
    test = docker_client.images.get(result.image).attrs["Config"]["Healthcheck"]["Test"]
    running = start(docker_client, result.image, healthcheck={"test": test, "interval": 500_000_000, "retries": 3})
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            running.container.reload()
            status = running.container.attrs["State"]["Health"]["Status"]
            if status == "healthy":
                break
            time.sleep(0.5)
        assert status == "healthy", running.container.attrs["State"]["Health"]
    finally:
        stop(running)


def test_new_model_version_rebuilds_only_the_model_layers(docker_client, example, built, tmp_path, base_image):
    first, _ = example
    subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "--seed", "1", "--out", str(tmp_path)], check=True, capture_output=True
    )
    image = f"pp-test-churn-{SUFFIX}:2"
    proc = subprocess.run(
        [
            sys.executable, "-m", "pipeline_plugin.cli", "package",
            "--model", f"churn:2={tmp_path / 'model.pkl'}",
            "--entry-script", str(EXAMPLE / "score.py"),
            "--requirements", str(EXAMPLE / "requirements.txt"),
            "--image", image, "--base-image", base_image, "--source", "mlflow",
            "--registry", "http://127.0.0.1:5000", "--json",
        ],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    built.append(image)
    second = json.loads(proc.stdout)
    assert second["image"] == image and second["image_id"].startswith("sha256:")
    assert second["labels"]["io.pipeline-plugin.model.version"] == "2"
    assert second["model_digest"] != first.model_digest
    # progress went to stderr and says the dependency steps came from the cache
    steps = proc.stderr.split("Step ")
    venv_step = next(s for s in steps if "pip install --no-index" in s)
    assert "(cached)" in venv_step
    # the layers: identical up to and including the code, different for the models
    old = docker_client.images.get(first.image).attrs["RootFS"]["Layers"]
    new = docker_client.images.get(image).attrs["RootFS"]["Layers"]
    assert len(old) == len(new)
    assert old[:-1] == new[:-1], "dependency, runtime and code layers were rebuilt"
    assert old[-1] != new[-1], "the model layer did not change"
    venv_layer = [h for h in docker_client.images.get(image).history() if "COPY dir:" in h["CreatedBy"]]
    assert max(h["Size"] for h in venv_layer) > 50_000_000  # the venv is the big layer that was reused


def test_generated_dockerfile_builds_the_same_image(docker_client, example, tmp_path, base_image):
    first, _ = example
    out = tmp_path / "context"
    generated = package(example_spec(base_image=base_image, generate_dockerfile=out))
    assert generated.image_id is None and generated.dockerfile_dir == out
    assert (out / "Dockerfile").is_file() and any((out / "wheels").glob("numpy-*.whl"))
    tag = f"pp-test-churn-{SUFFIX}:generated"
    proc = subprocess.run(
        ["docker", "build", "--network", "none", "-q", "-t", tag, str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    assert proc.returncode == 0, proc.stderr
    try:
        assert docker_client.images.get(tag).id == first.image_id
    finally:
        docker_client.images.remove(tag, noprune=True)


SLOW_SCORE = '''
import json, os, time

files = None


def init():
    global files
    root = os.environ["AZUREML_MODEL_DIR"]
    files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def run(raw_data):
    body = json.loads(raw_data)
    time.sleep(body.get("sleep", 0))
    return {"model_dir": os.environ["AZUREML_MODEL_DIR"], "files": files}
'''


def test_several_models_layout_and_sigterm_finishes_the_request_in_flight(docker_client, built, tmp_path, base_image):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(SLOW_SCORE)
    folder = tmp_path / "outputs"
    folder.mkdir()
    (folder / "tokens.txt").write_text("a b c")
    spec = example_spec(
        base_image=base_image,
        models=[ModelRef("churn", "1", EXAMPLE / "model.pkl"), ModelRef("vocab", "2", folder)],
        image=f"pp-test-multi-{SUFFIX}:1",
        entry_script=Path("score.py"),
        source_dir=tmp_path / "src",
    )
    result = package(spec)
    built.append(result.image)
    running = start(docker_client, result.image)
    try:
        reply: dict = {}

        def slow_request() -> None:
            try:
                r = httpx.post(running.url + "/score", json={"sleep": 3}, timeout=30)
                reply["status"], reply["body"] = r.status_code, r.json()
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                reply["error"] = repr(exc)

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(1.0)
        started = time.monotonic()
        running.container.stop(timeout=25)  # SIGTERM (the image's STOPSIGNAL), SIGKILL after 25 s
        stopped_after = time.monotonic() - started
        thread.join(30)
        assert reply.get("status") == 200, reply
        assert reply["body"]["model_dir"] == "/var/azureml-app/azureml-models"
        assert reply["body"]["files"] == ["churn/1/model.pkl", "vocab/2/outputs/tokens.txt"]
        running.container.reload()
        assert running.container.attrs["State"]["ExitCode"] == 0, running.container.logs().decode()[-2000:]
        assert stopped_after < 20, "the container needed SIGKILL"
    finally:
        stop(running)


def test_no_code_mlflow_sklearn_model(docker_client, built, tmp_path, base_image):
    import mlflow.sklearn
    import numpy as np
    import sklearn

    sys.path.insert(0, str(EXAMPLE))
    try:
        import train
    finally:
        sys.path.remove(str(EXAMPLE))
    model = train.train(seed=0)
    path = tmp_path / "churn-model"
    mlflow.sklearn.save_model(
        model, str(path), pip_requirements=[f"scikit-learn=={sklearn.__version__}", "skops==0.16.0", "mlflow==3.17.2"]
    )
    assert (path / "MLmodel").is_file()
    result = package(
        PackageSpec(models=[ModelRef("churn-mlflow", "4", path)], image=f"pp-test-nocode-{SUFFIX}:4", base_image=base_image)
    )
    built.append(result.image)
    assert result.labels["io.pipeline-plugin.entry-script"] == "generated:mlflow-sklearn"
    running = start(docker_client, result.image)
    try:
        rows = json.loads((EXAMPLE / "sample.json").read_text())["data"]
        for body in (
            {"input_data": {"columns": train.FEATURES, "index": [0, 1, 2], "data": rows}},
            {"data": rows},
        ):
            response = httpx.post(running.url + "/score", json=body, timeout=30)
            assert response.status_code == 200, response.text
            assert response.json() == model.predict(np.asarray(rows)).tolist()
        # input the model cannot score is the client's problem: 400 saying why, not an opaque 500
        for bad in ({"foo": 1}, {"data": [[1, 2]]}, {"data": [["a", "b", "c", "d"]]}):
            response = httpx.post(running.url + "/score", json=bad, timeout=30)
            assert response.status_code == 400, (bad, response.text)
            assert response.json()["message"].startswith(("the input cannot be read", "the model cannot score")), response.text
        # mlflow itself is not in the image
        check = running.container.exec_run(["python", "-c", "import mlflow"])
        assert check.exit_code != 0
    finally:
        stop(running)


@pytest.mark.registry
def test_push_reports_the_registry_digest(docker_client, example, built, tmp_path, base_image):
    from tests.services import docker_registry

    first, _ = example
    with docker_registry(tmp_path) as registry:
        name = f"pp-test-churn-{SUFFIX}"
        image = f"{registry.host}/{name}:1"
        lines: list[str] = []
        result = package(example_spec(base_image=base_image, image=image, push=True), lines.append)
        built.append(image)
        assert result.model_digest == first.model_digest
        assert result.digest and result.digest.startswith(f"{registry.host}/{name}@sha256:")
        manifest = httpx.head(
            f"{registry.url}/v2/{name}/manifests/1",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            timeout=10,
        )
        assert manifest.status_code == 200
        assert manifest.headers["Docker-Content-Digest"] == result.digest.split("@", 1)[1]
        assert any(line.startswith("pushing ") for line in lines)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value) -> bytes:
    """One protobuf field: int -> varint, bytes/str -> length-delimited."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def onnx_matmul_model(weights: list[float]) -> bytes:
    """An ONNX model Y = X @ W (X: float [N, len(W)], W: [len(W), 1]), encoded by hand so the
    test needs no onnx package: ModelProto{ir_version, opset_import, graph}."""
    import struct

    def value_info(name: str, dims: list) -> bytes:
        shape = b"".join(_field(1, _field(2, d) if isinstance(d, str) else _field(1, d)) for d in dims)
        tensor_type = _field(1, 1) + _field(2, shape)  # elem_type FLOAT, shape
        return _field(1, name) + _field(2, _field(1, tensor_type))

    initializer = (
        _field(1, len(weights)) + _field(1, 1) + _field(2, 1) + _field(8, "W")
        + _field(9, struct.pack(f"<{len(weights)}f", *weights))
    )
    node = _field(1, "X") + _field(1, "W") + _field(2, "Y") + _field(3, "matmul") + _field(4, "MatMul")
    graph = (
        _field(1, node) + _field(2, "linear") + _field(5, initializer)
        + _field(11, value_info("X", ["N", len(weights)])) + _field(12, value_info("Y", ["N", 1]))
    )
    return _field(1, 8) + _field(8, _field(1, "") + _field(2, 13)) + _field(2, "pipeline-plugin-tests") + _field(7, graph)


def test_no_code_onnx_model(docker_client, built, tmp_path, base_image):
    weights = [0.5, -1.0, 2.0, 0.25]
    model = tmp_path / "linear.onnx"
    model.write_bytes(onnx_matmul_model(weights))
    result = package(PackageSpec(models=[ModelRef("linear", "1", model)], image=f"pp-test-onnx-{SUFFIX}:1", base_image=base_image))
    built.append(result.image)
    assert result.labels["io.pipeline-plugin.entry-script"] == "generated:onnx"
    running = start(docker_client, result.image)
    try:
        rows = [[1, 2, 3, 4], [0, 0, 1, 0]]
        response = httpx.post(running.url + "/score", json={"data": rows}, timeout=30)
        assert response.status_code == 200, response.text
        expected = [sum(w * x for w, x in zip(weights, row)) for row in rows]
        assert [len(y) for y in response.json()["Y"]] == [1, 1]
        assert [y[0] for y in response.json()["Y"]] == pytest.approx(expected)
        named = httpx.post(running.url + "/score", json={"inputs": {"X": rows[:1]}}, timeout=30)
        assert named.json()["Y"][0][0] == pytest.approx(expected[0])
        for bad, says in (({"data": [[1, 2]]}, "the model cannot score"), ({"data": [["a"]]}, "the input cannot be read"),
                          ({"inputs": {"Z": [[1]]}}, "unknown model input"), ({"foo": 1}, "send {")):
            response = httpx.post(running.url + "/score", json=bad, timeout=30)
            assert response.status_code == 400 and says in response.json()["message"], (bad, response.text)
    finally:
        stop(running)


def test_conda_file_pip_section_gives_the_same_dependency_layers(docker_client, example, built, tmp_path, base_image):
    """A conda file whose pip section equals the example's requirements.txt installs the same venv
    (the dependency layers come from the cache of the requirements.txt build)."""
    first, _ = example
    pins = (EXAMPLE / "requirements.txt").read_text().split()
    env = tmp_path / "environment.yml"
    env.write_text(
        "name: churn\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n"
        + "".join(f"      - {p}\n" for p in pins)
    )
    spec = example_spec(base_image=base_image, image=f"pp-test-conda-{SUFFIX}:1", requirements=None, conda=env)
    result = package(spec)
    built.append(result.image)

    def venv_layers(image: str) -> list[str]:
        # base file system, useradd, the venv copied from the deps stage
        return docker_client.images.get(image).attrs["RootFS"]["Layers"][:3]

    assert venv_layers(result.image) == venv_layers(first.image)
    check = docker_client.containers.run(
        result.image, ["python", "-c", "import sklearn; print(sklearn.__version__)"], remove=True
    )
    assert check.decode().strip() == pins[0].split("==")[1]


def test_label_values_from_events_stay_literal(docker_client, built, base_image):
    """Registry names come from webhook events: quotes, backslashes, `$` and non-ASCII must reach
    the label unchanged (no Dockerfile variable substitution, no injected instructions)."""
    registry = 'https://reg.example/$HOME/${PATH} "q" \\ ünï'
    result = package(example_spec(base_image=base_image, image=f"pp-test-labels-{SUFFIX}:1", registry=registry))
    built.append(result.image)
    labels = docker_client.images.get(result.image).attrs["Config"]["Labels"]
    assert labels["io.pipeline-plugin.model.registry"] == registry
    assert result.labels["io.pipeline-plugin.model.registry"] == registry
