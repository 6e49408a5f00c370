"""A docker-registry ``image.pushed`` event is already an image: the local provider skips fetch and
package and deploys that digest to staging, smoke-tests it and promotes it (real Docker, Debian's
docker-registry)."""

from __future__ import annotations

import secrets

import pytest
import requests

from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.history import History
from pipeline_plugin.providers import PipelineRun, get_provider
from pipeline_plugin.providers.local import pushed_image
from pipeline_plugin.stages.package import ModelRef, PackageSpec, package
from pipeline_plugin.targets import get_target
from tests.services import docker_registry

from .models import SAMPLE, expected, write_version

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.slow]


def test_pushed_image_names_its_digest():
    event = ModelVersionEvent(source="docker-registry", kind="image.pushed", model="team/churn", version="v3",
                              delivery_id="d1", image_uri="127.0.0.1:5000/team/churn:v3", digest="sha256:" + "a" * 64)
    assert pushed_image(event) == "127.0.0.1:5000/team/churn@sha256:" + "a" * 64


def test_an_image_pushed_event_deploys_that_digest_without_packaging(tmp_path, e2e_state, e2e_service, docker_client,
                                                                    base_image):
    files = write_version(tmp_path, 5)
    with docker_registry(tmp_path) as registry:
        repo = f"{registry.host}/pp-test-pushed-{secrets.token_hex(3)}"
        built = package(PackageSpec(models=[ModelRef("sums", "5", files["model_file"])], image=f"{repo}:v5",
                                    entry_script=tmp_path / files["entry_script"], base_image=base_image, push=True))
        digest = built.digest.split("@", 1)[1]
        docker_client.images.remove(f"{repo}:v5", noprune=True)  # what serves comes by digest, not this tag
        event = ModelVersionEvent(source="docker-registry", kind="image.pushed", model=repo.split("/", 1)[1],
                                  version="v5", delivery_id=f"d-{secrets.token_hex(4)}", image_uri=f"{repo}:v5",
                                  digest=digest, registry={"repository": repo.split("/", 1)[1], "host": registry.host})
        pipeline = {"provider": "local", "service": e2e_service, "target": "docker", "sample": files["sample"],
                    "expect": files["expect"]}
        run = PipelineRun(run_id=f"run-{e2e_service}", rule_name="pushed", pipeline=pipeline, event=event,
                          state_dir=e2e_state, rules_dir=tmp_path)
        result = get_provider("local").dispatch(run)
        assert result.status == "succeeded", result.detail
        prod = get_target("docker").get(e2e_service, "production")
        assert requests.post(prod.scoring_uri, json={"data": SAMPLE}, timeout=30).json() == expected(5)
        actions = [r.action for r in History(e2e_state).records(service=e2e_service)]
        assert "fetch" not in actions and "package" not in actions and "deploy" in actions
        assert set(result.data["timings"]) >= {"deploy_staging", "smoke_staging", "promote"}
        assert "fetch" not in result.data["timings"] and "package" not in result.data["timings"]
