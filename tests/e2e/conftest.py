"""End-to-end fixtures: a state dir, unique service names, and clean-up of every container,
stable address and image a test deployed (Docker is required: missing Docker fails)."""

from __future__ import annotations

import secrets

import pytest


@pytest.fixture(scope="module")
def e2e_state(tmp_path_factory):
    import os

    d = tmp_path_factory.mktemp("e2e-state")
    old = os.environ.get("PIPELINE_PLUGIN_STATE_DIR")
    os.environ["PIPELINE_PLUGIN_STATE_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("PIPELINE_PLUGIN_STATE_DIR", None)
    else:
        os.environ["PIPELINE_PLUGIN_STATE_DIR"] = old


def cleanup(docker_client, service: str) -> None:
    from pipeline_plugin.targets import get_target

    tgt = get_target("docker")
    for env in ("staging", "production"):
        tgt.delete(service, env)
    for image in docker_client.images.list(name=f"pipeline-plugin/{service}"):
        try:
            docker_client.images.remove(image.id, force=True)
        except Exception:  # noqa: BLE001 - shared layers or an image in use elsewhere
            pass


@pytest.fixture(scope="module")
def e2e_service(docker_client, base_image, e2e_state):
    name = f"e2e-{secrets.token_hex(3)}"
    yield name
    cleanup(docker_client, name)
