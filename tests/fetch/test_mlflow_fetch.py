"""MLflow URIs against a real MLflow server: a small sklearn model logged and registered, fetched as
models:/NAME/VERSION, models:/NAME@ALIAS and runs:/RUN/PATH; and `package --model m:1=models:/m/1`
run as a CI job runs it (a subprocess with MLFLOW_TRACKING_URI) building an image on real Docker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from pipeline_plugin.errors import ConfigError, NotFoundError
from pipeline_plugin.fetch import fetch
from tests.services import mlflow_server

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "churn"
NAME = f"churn-fetch-{uuid.uuid4().hex[:6]}"

pytestmark = pytest.mark.mlflow


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """(server url, run id, the trained model) with NAME v1 registered and aliased `champion`."""
    import mlflow
    import mlflow.sklearn
    import sklearn
    from mlflow.tracking import MlflowClient

    sys.path.insert(0, str(EXAMPLE))
    try:
        import train
    finally:
        sys.path.remove(str(EXAMPLE))
    model = train.train(seed=0)
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as server:
        mlflow.set_tracking_uri(server.url)
        try:
            mlflow.set_experiment("fetch-tests")
            with mlflow.start_run() as run:
                mlflow.sklearn.log_model(model, name="model", registered_model_name=NAME,
                                         pip_requirements=[f"scikit-learn=={sklearn.__version__}", "mlflow==3.17.2"])
                extra = tmp_path_factory.mktemp("extra")
                (extra / "notes.txt").write_text("a run artifact")
                mlflow.log_artifacts(str(extra), artifact_path="files")
            MlflowClient(server.url).set_registered_model_alias(NAME, "champion", "1")
        finally:
            mlflow.set_tracking_uri(None)
            # set_experiment exported MLFLOW_EXPERIMENT_ID: a later subprocess would ask another server for it
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        yield server.url, run.info.run_id, model


def test_models_uri_by_version_and_alias(registered, tmp_path, monkeypatch):
    url, _run, _model = registered
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    said: list[str] = []
    got = fetch(f"models:/{NAME}/1", tmp_path / "v1", registry={"tracking_uri": url}, progress=said.append)
    assert got.backend == "mlflow" and got.path == tmp_path / "v1" / "model"
    assert (got.path / "MLmodel").is_file() and got.requirements == got.path / "requirements.txt"
    assert "scikit-learn" in got.requirements.read_text()
    assert any(url in line for line in said)
    # the usual environment names the server when the event does not
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    by_alias = fetch(f"models:/{NAME}@champion", tmp_path / "alias")
    assert (by_alias.path / "MLmodel").read_text() == (got.path / "MLmodel").read_text()


def test_runs_uri_and_errors(registered, tmp_path, monkeypatch):
    url, run_id, _model = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    got = fetch(f"runs:/{run_id}/files", tmp_path / "run")
    assert (got.path / "notes.txt").read_text() == "a run artifact" and got.requirements is None
    with pytest.raises(NotFoundError, match=f"models:/{NAME}/9"):
        fetch(f"models:/{NAME}/9", tmp_path / "missing")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI is not set"):
        fetch(f"models:/{NAME}/1", tmp_path / "nowhere")


@pytest.mark.docker
@pytest.mark.slow
def test_package_cli_fetches_from_mlflow_and_builds(registered, tmp_path, docker_client, base_image):
    """`package --model m:1=models:/m/1` as a CI job runs it: a separate process, MLFLOW_TRACKING_URI
    in its environment, the image built on real Docker serves the registered model's predictions."""
    import numpy as np

    url, _run, model = registered
    image = f"pp-test-fetch-{uuid.uuid4().hex[:8]}:1"
    env = {**os.environ, "MLFLOW_TRACKING_URI": url}
    cmd = [str(REPO / ".venv" / "bin" / "pipeline-plugin"), "package", "--model", f"{NAME}:1=models:/{NAME}/1",
           "--image", image, "--base-image", base_image, "--source", "mlflow", "--registry", url, "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert f"fetching models:/{NAME}/1 from MLflow" in proc.stderr
    result = json.loads(proc.stdout)
    try:
        assert result["labels"]["io.pipeline-plugin.model.version"] == "1"
        assert result["labels"]["io.pipeline-plugin.entry-script"] == "generated:mlflow-sklearn"
        port_container = docker_client.containers.run(image, detach=True, ports={"5001/tcp": ("127.0.0.1", None)})
        try:
            import time

            deadline = time.monotonic() + 60
            port_container.reload()
            port = port_container.ports["5001/tcp"][0]["HostPort"]
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
            rows = json.loads((EXAMPLE / "sample.json").read_text())["data"]
            r = httpx.post(f"http://127.0.0.1:{port}/score", json={"data": rows}, timeout=30)
            assert r.status_code == 200, (r.text, port_container.logs()[-2000:])
            assert r.json() == model.predict(np.asarray(rows)).tolist()
        finally:
            port_container.remove(force=True)
    finally:
        try:
            docker_client.images.remove(image, noprune=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
