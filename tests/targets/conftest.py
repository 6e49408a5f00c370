"""Fixtures for deploy target tests: small test images built FROM the real base image (a stdlib
stand-in for the runtime, see app/server.py), a private state dir, unique service names, and
cleanup of everything a test deployed."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest

APP = Path(__file__).parent / "app"

DOCKERFILE = """\
FROM {base}
COPY server.py /app/server.py
USER 10001
LABEL io.pipeline-plugin.model.name=test-model io.pipeline-plugin.model.version={version}
ENV VERSION={version}
CMD ["python3", "/app/server.py"]
"""


@pytest.fixture(scope="session")
def app_images(docker_client, base_image, tmp_path_factory):
    """{"1": tag, "2": tag}: two versions of the test app, removed after the session."""
    repo = f"pp-test-app-{secrets.token_hex(3)}"
    tags = {}
    for version in ("1", "2"):
        ctx = tmp_path_factory.mktemp(f"app{version}")
        shutil.copy(APP / "server.py", ctx / "server.py")
        (ctx / "Dockerfile").write_text(DOCKERFILE.format(base=base_image, version=version))
        tag = f"{repo}:v{version}"
        docker_client.images.build(path=str(ctx), tag=tag, rm=True)
        tags[version] = tag
    yield tags
    for tag in tags.values():
        try:
            docker_client.images.remove(tag, force=True)
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "state"
    monkeypatch.setenv("PIPELINE_PLUGIN_STATE_DIR", str(path))
    return path


@pytest.fixture
def service() -> str:
    return f"t-{secrets.token_hex(4)}"
