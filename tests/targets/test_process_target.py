"""The process target: the runtime as a local process behind a real nginx stable address."""

from __future__ import annotations

import http.client
import json
import shutil
from pathlib import Path

import pytest

from pipeline_plugin.errors import ConfigError, NotFoundError, StageFailed
from pipeline_plugin.targets import DeploymentSpec
from pipeline_plugin.targets.process import PackageDir, ProcessTarget

from loadgen import LoadLoop

APP = Path(__file__).parent / "app"

# the shape `package --generate-dockerfile` writes (templates/docker/Dockerfile.j2)
DOCKERFILE = """\
FROM pipeline-plugin/base:bookworm AS deps
ENV IGNORED=from-the-first-stage
FROM pipeline-plugin/base:bookworm
COPY runtime/ /opt/pipeline-plugin/
COPY app/ /var/azureml-app/
COPY models/ /var/azureml-app/azureml-models/
ENV PATH=/opt/venv/bin:/usr/bin \\
    PYTHONPATH=/opt/pipeline-plugin \\
    PORT=5001 \\
    VERSION={version} \\
    AZUREML_SOURCE_DIRECTORY=/var/azureml-app \\
    AZUREML_ENTRY_SCRIPT=score.py \\
    AZUREML_MODEL_DIR=/var/azureml-app/azureml-models/test-model/{version}
LABEL io.pipeline-plugin.model.name="test-model" \\
      io.pipeline-plugin.model.version="{version}"
USER 10001:10001
CMD ["python", "-m", "pipeline_plugin.runtime"]
"""

SCORE = """\
import os
def init():
    global answer
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt")) as fh:
        answer = fh.read().strip()
def run(data):
    return {"version": answer}
"""


def package_dir(root: Path, version: str, runtime: str = "stand-in") -> Path:
    """A package directory; ``runtime='stand-in'`` ships tests/targets/app/server.py as the
    runtime (runtime/pipeline_plugin/runtime/__main__.py), ``'installed'`` ships none."""
    d = root / f"pkg-{version}-{runtime}"
    (d / "app").mkdir(parents=True)
    (d / "models" / "test-model" / version).mkdir(parents=True)
    (d / "Dockerfile").write_text(DOCKERFILE.format(version=version))
    (d / "app" / "score.py").write_text(SCORE)
    (d / "models" / "test-model" / version / "model.txt").write_text(version)
    if runtime == "stand-in":
        pkg = d / "runtime" / "pipeline_plugin" / "runtime"
        pkg.mkdir(parents=True)
        (d / "runtime" / "pipeline_plugin" / "__init__.py").write_text("")
        (pkg / "__init__.py").write_text("")
        shutil.copy(APP / "server.py", pkg / "__main__.py")
    return d


def post(port: int, body: dict, key: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        conn.request("POST", "/score", body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


@pytest.fixture
def target(state_dir, service):
    t = ProcessTarget(state_dir=state_dir, ready_timeout=60)
    yield t
    for env in ("staging", "production"):
        t.delete(service, env)


def test_package_dir_maps_image_paths_onto_the_folder(tmp_path):
    d = package_dir(tmp_path, "3")
    pkg = PackageDir(d)
    env = pkg.runtime_env()
    assert env["AZUREML_MODEL_DIR"] == str(d.resolve() / "models" / "test-model" / "3")
    assert env["AZUREML_SOURCE_DIRECTORY"] == str(d.resolve() / "app")
    assert env["AZUREML_ENTRY_SCRIPT"] == "score.py"
    assert env["PYTHONPATH"] == str(d.resolve() / "runtime")
    assert "IGNORED" not in env  # only the final stage describes the image
    assert pkg.labels["io.pipeline-plugin.model.version"] == "3"
    assert pkg.digest() == PackageDir(d).digest() and pkg.digest().startswith("sha256:")


def test_deploy_update_with_zero_failed_requests_and_get_from_a_fresh_target(target, tmp_path, service, state_dir):
    v1, v2 = package_dir(tmp_path, "1"), package_dir(tmp_path, "2")
    d1 = target.create(DeploymentSpec(service=service, env="staging", image=str(v1), keys=("k",), environment={"APP_X": "y"}))
    port = d1.details["port"]
    assert (d1.model, d1.version, d1.status) == ("test-model", "1", "running")
    assert post(port, {"data": 1})[0] == 401
    assert post(port, {"data": 1}, key="k") == (200, {"version": "1", "result": 1})
    assert target.create(DeploymentSpec(service=service, env="staging", image=str(v1), keys=("k",), environment={"APP_X": "y"})).details["pid"] == d1.details["pid"]

    with LoadLoop(port, key="k", workers=3, sessions=2, max_requests=3000) as load:
        d2 = target.update(DeploymentSpec(service=service, env="staging", image=str(v2), keys=("k",)))
    assert load.failures == [], load.failures[:5]
    assert load.versions["1"] > 0 and load.versions["2"] > 0
    assert d2.scoring_uri == d1.scoring_uri and d2.version == "2"

    fresh = ProcessTarget(state_dir=state_dir)
    assert fresh.get(service, "staging").status == "running"
    assert [d.version for d in fresh.list(service)] == ["2"]
    # promote-style: deploy the digest that ran in staging to another env
    prod = fresh.create(DeploymentSpec(service=service, env="production", image=d2.image_id))
    assert prod.image_id == d2.image_id and post(prod.details["port"], {"data": 0})[1]["version"] == "2"
    assert fresh.history(service, "staging")[-1]["deployment"]["version"] == "1"


def test_the_installed_runtime_serves_a_package_dir(target, tmp_path, service):
    d = target.create(DeploymentSpec(service=service, env="staging", image=str(package_dir(tmp_path, "7", runtime="installed"))))
    status, body = post(d.details["port"], {"data": [[1, 2]]})
    assert status == 200 and "7" in json.dumps(body), body


def test_a_process_that_never_gets_ready_is_stopped_and_the_old_keeps_serving(state_dir, tmp_path, service):
    target = ProcessTarget(state_dir=state_dir, ready_timeout=3)
    try:
        old = target.create(DeploymentSpec(service=service, env="staging", image=str(package_dir(tmp_path, "1"))))
        with pytest.raises(StageFailed, match="not ready"):
            target.update(DeploymentSpec(service=service, env="staging", image=str(package_dir(tmp_path, "2")), environment={"FAIL_READY": "1"}))
        with pytest.raises(StageFailed, match="exited with code 3.*model file is corrupt"):
            target.update(DeploymentSpec(service=service, env="staging", image=str(package_dir(tmp_path, "3")), environment={"CRASH": "1"}))
        assert post(old.details["port"], {"data": 1})[1]["version"] == "1"
        assert target.get(service, "staging").version == "1"
    finally:
        target.delete(service, "staging")
        target.delete(service, "staging")
    assert target.get(service, "staging") is None


def test_bad_images_are_named(target, tmp_path, service):
    with pytest.raises(ConfigError, match="not a directory"):
        target.create(DeploymentSpec(service=service, env="staging", image="registry.example/model:1"))
    with pytest.raises(ConfigError, match="no Dockerfile"):
        target.create(DeploymentSpec(service=service, env="staging", image=str(tmp_path)))
    with pytest.raises(NotFoundError, match="never deployed"):
        target.create(DeploymentSpec(service=service, env="staging", image="sha256:" + "1" * 64))
