"""The targets with real model images: the churn example packaged by `package` (scikit-learn model,
the real scoring runtime), deployed, scored, and updated under load."""

from __future__ import annotations

import json
import secrets
import urllib.request
from pathlib import Path

import pytest

from pipeline_plugin.stages.package import ModelRef, PackageSpec, package
from pipeline_plugin.targets import DeploymentSpec
from pipeline_plugin.targets.docker import DockerTarget
from pipeline_plugin.targets.process import ProcessTarget

from loadgen import LoadLoop

CHURN = Path(__file__).resolve().parents[2] / "examples" / "churn"


def churn_spec(version: str, image: str, generate: Path | None = None) -> PackageSpec:
    return PackageSpec(
        models=[ModelRef("churn", version, CHURN / "model.pkl")], image=image, entry_script=CHURN / "score.py",
        requirements=CHURN / "requirements.txt", generate_dockerfile=generate,
    )


@pytest.fixture(scope="module")
def churn_images(docker_client, base_image):
    repo = f"pp-test-churn-{secrets.token_hex(3)}"
    images = {v: package(churn_spec(v, f"{repo}:{v}")).image for v in ("1", "2")}
    yield images
    for tag in images.values():
        try:
            docker_client.images.remove(tag, force=True)
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass


def score(uri: str, body: bytes, key: str | None = None):
    req = urllib.request.Request(uri, data=body, headers={"Content-Type": "application/json"})
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_docker_target_serves_and_updates_a_real_model_with_zero_failed_requests(churn_images, state_dir, service):
    sample = (CHURN / "sample.json").read_bytes()
    expected = json.loads((CHURN / "expected.json").read_text())
    target = DockerTarget(state_dir=state_dir, ready_timeout=120)
    try:
        d1 = target.create(DeploymentSpec(service=service, env="staging", image=churn_images["1"], cpu_cores=1, memory_gb=1, keys=("ck",)))
        assert (d1.model, d1.version) == ("churn", "1")
        assert score(d1.scoring_uri, sample, "ck")["predictions"] == expected["predictions"]
        with LoadLoop(d1.details["port"], key="ck", workers=2, sessions=2, max_requests=2000, body=sample.decode()) as load:
            d2 = target.update(DeploymentSpec(service=service, env="staging", image=churn_images["2"], cpu_cores=1, memory_gb=1, keys=("ck",)))
        assert load.failures == [], load.failures[:5]
        assert load.ok > 0 and d2.version == "2" and d2.scoring_uri == d1.scoring_uri
        assert score(d2.scoring_uri, sample, "ck")["predictions"] == expected["predictions"]
    finally:
        target.delete(service, "staging")


def test_process_target_runs_a_generated_package_directory(state_dir, service, tmp_path, base_image):
    folder = tmp_path / "churn-package"
    package(churn_spec("5", "unused:5", generate=folder))
    target = ProcessTarget(state_dir=state_dir, ready_timeout=120)
    try:
        d = target.create(DeploymentSpec(service=service, env="staging", image=str(folder)))
        assert (d.model, d.version) == ("churn", "5")
        expected = json.loads((CHURN / "expected.json").read_text())
        assert score(d.scoring_uri, (CHURN / "sample.json").read_bytes())["predictions"] == expected["predictions"]
    finally:
        target.delete(service, "staging")
