"""The local base image `pipeline-plugin base-image` builds (debootstrap + docker import): what the
model images rely on, and the errors when this machine cannot build it."""

from __future__ import annotations

import pytest

from pipeline_plugin import cli
from pipeline_plugin.builders import base_image as base
from pipeline_plugin.errors import ConfigError


@pytest.mark.docker
def test_base_image_has_python_venv_pip_and_certificates(docker_client, base_image):
    attrs = docker_client.images.get(base_image).attrs
    assert attrs["Config"]["Cmd"] == ["python3"]
    assert "LANG=C.UTF-8" in attrs["Config"]["Env"]
    script = (
        "import sys, ssl, venv, ensurepip, os; "
        "assert sys.version_info[:2] == (3, 11), sys.version; "
        "assert os.path.exists(ssl.get_default_verify_paths().cafile or '/etc/ssl/certs/ca-certificates.crt'); "
        "assert not [f for f in os.listdir('/var/lib/apt/lists') if f != 'partial'], 'apt lists were not trimmed'; "
        "print('ok')"
    )
    out = docker_client.containers.run(base_image, ["sh", "-c", f'python3 -c "{script}" && python3 -m pip --version'], remove=True)
    assert out.decode().startswith("ok\npip ")
    assert attrs["Size"] < 250_000_000  # minbase + python3: trimmed of docs, caches and apt lists


def test_base_image_needs_root(monkeypatch):
    monkeypatch.setattr(base.os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError, match=r"base-image needs root: .*sudo .*pipeline-plugin base-image --tag"):
        base.check_prerequisites()


def test_base_image_needs_debootstrap(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(base.shutil, "which", lambda name: None)
    monkeypatch.setattr(base, "Path", lambda p: tmp_path / "none")
    assert cli.main(["base-image", "--tag", "x/base:1"]) == 2
    assert "debootstrap is not installed; install it with `apt-get install debootstrap`" in capsys.readouterr().err


def test_base_image_tag_needs_a_tag_part():
    with pytest.raises(ConfigError, match="--tag 'x/base' has no tag part"):
        base.build_base_image("x/base")
