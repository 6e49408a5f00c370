"""Shared pieces of the tests that run a rendered CI pipeline's stages for real (tests/action,
tests/ci_runners): a real MLflow server with the churn example registered as versions 1 and 2 (one
trained model), the trigger rule, and what a user checks afterwards (what each environment serves,
MLflow's `production` alias, the production answer), and the clean-up of what the stages started.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from pipeline_plugin.events import ModelVersionEvent
from tests.services import POSTGRES_PASSWORD  # noqa: F401 - what the logs must never show

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "churn"
LABEL = "io.pipeline-plugin.deployment."
CLI = Path(sys.executable).with_name("pipeline-plugin")


@contextmanager
def mlflow_with_versions(workdir: Path, name: str, versions: int = 2) -> Iterator[str]:
    """A real MLflow server (tests/services.py) with the churn example trained once and registered
    ``versions`` times under ``name`` (as `examples/churn/train.py --register` does: model.pkl,
    which score.py loads). Yields the tracking URI."""
    import mlflow
    import mlflow.sklearn
    import sklearn

    from tests.services import mlflow_server

    sys.path.insert(0, str(EXAMPLE))
    try:
        import train
    finally:
        sys.path.remove(str(EXAMPLE))
    model = train.train(seed=0)
    with mlflow_server(workdir) as server:
        mlflow.set_tracking_uri(server.url)
        try:
            mlflow.set_experiment("ci-chain")
            for _ in range(versions):
                with mlflow.start_run():
                    mlflow.sklearn.log_model(model, name="model", registered_model_name=name,
                                             serialization_format="pickle",
                                             pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
        finally:
            mlflow.set_tracking_uri(None)
            # set_experiment exported MLFLOW_EXPERIMENT_ID: a later subprocess would ask another server for it
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        yield server.url


def production_alias(tracking_uri: str, name: str) -> str | None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri).get_model_version_by_alias(name, "production").version
    except MlflowException:
        return None


def mlflow_event(model: str, version: str, tracking_uri: str) -> ModelVersionEvent:
    """MLflow's `model_version.created` as the listener records it: the registry identity names the
    tracking server; no artifact URI, so the pipelines fetch models:/NAME/VERSION."""
    return ModelVersionEvent.from_dict({
        "source": "mlflow", "kind": "model_version.created", "model": model, "version": version,
        "tags": {"stage": "candidate"}, "delivery_id": f"d-{version}", "registry": {"tracking_uri": tracking_uri},
    })


def pipeline_settings(service: str, staging: int, production: int) -> dict:
    """The rule's `pipeline:` keys as `init` writes them for the example (its files at the
    repository root), with this test's ports and image repository."""
    return {
        "service": service,
        "target": "docker",
        "entry_script": "score.py",
        "requirements": "requirements.txt",
        "sample": "sample.json",
        "expect": "expected.json",
        "staging_port": staging,
        "production_port": production,
        "image_repository": f"localhost:5000/{service}",  # images of this test only
    }


def repository(workspace: Path, expected: dict, score_py: str | None = None) -> None:
    """What `checkout` puts in a job's workspace: the example's scoring code (or ``score_py``) and
    its expected output."""
    workspace.mkdir(parents=True, exist_ok=True)
    for name in ("score.py", "requirements.txt", "sample.json"):
        (workspace / name).write_bytes((EXAMPLE / name).read_bytes())
    if score_py is not None:
        (workspace / "score.py").write_text(score_py)
    (workspace / "expected.json").write_text(json.dumps(expected))


def fails_in_production() -> str:
    """The example's score.py, changed so that it answers in staging and fails in production (a
    setting it needs exists only in staging): promote's production smoke test fails."""
    text = (EXAMPLE / "score.py").read_text()
    anchor = "    if not np.isfinite(data).all():\n"
    assert anchor in text
    return text.replace(anchor, '    if os.environ.get("PIPELINE_PLUGIN_ENV") == "production":\n'
                                '        raise RuntimeError("a setting this version needs exists only in staging")\n' + anchor)


def containers(docker_client, service: str, env: str | None = None, running: bool = False) -> list:
    filters = [f"{LABEL}service={service}"] + ([f"{LABEL}env={env}"] if env else [])
    return docker_client.containers.list(all=not running, filters={"label": filters})


def serving(docker_client, service: str, env: str) -> set[str]:
    """The model versions the running containers of (service, env) carry in their labels."""
    return {c.labels.get(LABEL + "version", "?") for c in containers(docker_client, service, env, running=True)}


def serves(service: str, database_url: str, tmp_path: Path) -> dict[str, str]:
    """`pipeline-plugin status` from another machine (an empty state dir) through the shared store."""
    empty = tmp_path / f"elsewhere-{secrets.token_hex(3)}"
    proc = subprocess.run([str(CLI), "status", "--name", service, "--target", "docker", "--state-dir", str(empty),
                           "--database-url", database_url, "--json"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {env: e["version"] for env, e in json.loads(proc.stdout)["environments"].items() if e.get("version")}


def score(url: str) -> dict:
    r = requests.post(url, json=json.loads((EXAMPLE / "sample.json").read_text()), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def assert_close(answer: dict, expected: dict) -> None:
    assert answer["predictions"] == expected["predictions"]
    assert answer["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-4)


def cleanup(docker_client, service: str, database_url: str, proxy_dir: Path) -> None:
    """Stop what the stages started: the stable addresses through the target's own delete (reading
    the shared store), then any container still labelled with the service, then its images."""
    from pipeline_plugin.targets.docker import DockerTarget

    saved = {k: os.environ.get(k) for k in ("PIPELINE_PLUGIN_DATABASE_URL", "PIPELINE_PLUGIN_PROXY_DIR")}
    os.environ.update({"PIPELINE_PLUGIN_DATABASE_URL": database_url, "PIPELINE_PLUGIN_PROXY_DIR": str(proxy_dir)})
    try:
        for env in ("staging", "production"):
            try:
                DockerTarget(state_dir=proxy_dir / "cleanup-state").delete(service, env)
            except Exception as exc:  # noqa: BLE001 - clean-up goes on with the containers
                print(f"cleanup {service}/{env}: {exc}")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    for container in containers(docker_client, service):
        try:
            container.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
    for image in docker_client.images.list():
        if not any(tag.startswith(f"localhost:5000/{service}/") for tag in image.tags):
            continue
        try:
            docker_client.images.remove(image.id, force=True)
        except Exception:  # noqa: BLE001 - shared by another tag
            pass


# ---- module fixtures of the chain tests (import them by name; each test module names its own
# `service` fixture, which these key on) ------------------------------------------------------
@pytest.fixture(scope="module")
def database_url(postgres, service) -> str:
    """One empty PostgreSQL database: the store every stage of the chain shares."""
    return postgres.create_database(f"t_{service.replace('-', '_')}")


@pytest.fixture(scope="module")
def proxy_dir(docker_client, service, database_url, tmp_path_factory):
    """The runner or agent host's folder for the docker target's stable addresses; everything the
    stages started is stopped afterwards."""
    d = tmp_path_factory.mktemp("addresses")
    yield d
    cleanup(docker_client, service, database_url, d)

