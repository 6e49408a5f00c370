"""Prepare a wheelhouse on the host for the image's Python, so the image build needs no network.

``pip download`` runs here, outside the container, for the target interpreter and platform
(``--python-version``, ``--platform``, ``--implementation cp``, ``--only-binary=:all:``). Downloaded
wheels are kept in a host cache (``~/.cache/pipeline-plugin/wheels``, or
``$PIPELINE_PLUGIN_WHEEL_CACHE``); a build first tries to resolve from that cache alone (no
network) and only downloads what is missing. The wheels a build needs are then copied into the
build context, where ``pip install --no-index --find-links`` installs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, ServiceError

WHEEL_CACHE_ENV = "PIPELINE_PLUGIN_WHEEL_CACHE"


@dataclass(frozen=True)
class TargetPython:
    """The interpreter inside the image the wheels are for."""

    version: str = "3.11"  # major.minor
    glibc: str = "2.36"  # major.minor; decides which manylinux tags fit
    machine: str = "x86_64"

    @property
    def abi(self) -> str:
        return "cp" + self.version.replace(".", "")

    def platforms(self) -> list[str]:
        """manylinux tags the image can run, newest first (PEP 600 plus the legacy aliases)."""
        major, minor = (int(x) for x in self.glibc.split(".")[:2])
        if major != 2:
            raise ConfigError(f"unsupported glibc {self.glibc} in the base image; a glibc 2.x Linux is needed")
        tags = [f"manylinux_2_{m}_{self.machine}" for m in range(minor, 4, -1)]
        # the pre-PEP 600 names: manylinux2014 exists for every architecture, the older two for x86 only
        for glibc_minor, alias in ((17, "manylinux2014"), (12, "manylinux2010"), (5, "manylinux1")):
            if minor >= glibc_minor and (alias == "manylinux2014" or self.machine in ("x86_64", "i686")):
                tags.append(f"{alias}_{self.machine}")
        return tags


def cache_dir() -> Path:
    env = os.environ.get(WHEEL_CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pipeline-plugin" / "wheels"


def _pip_download(args: list[str], target: TargetPython) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        "--only-binary=:all:",
        "--implementation", "cp",
        "--python-version", target.version,
        "--abi", target.abi,
    ]
    for platform in target.platforms():
        cmd += ["--platform", platform]
    return subprocess.run(cmd + args, capture_output=True, text=True)


def _problem(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("ERROR") or "No matching distribution" in line]
    return "\n".join(lines[-6:]) or "\n".join(stderr.splitlines()[-6:])


def prepare(
    requirements_file: Path,
    dest: Path,
    target: TargetPython = TargetPython(),
    progress: Callable[[str], None] = lambda _m: None,
    cache: Path | None = None,
) -> list[str]:
    """Fill ``dest`` with the wheels ``requirements_file`` resolves to for ``target``; returns their names.

    Resolves from the host cache alone first (no network); downloads into the cache only when
    something is missing.
    """
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    req = ["-r", str(requirements_file)]
    offline = ["--no-index", "--find-links", str(cache), "--dest", str(dest)]
    first = _pip_download(offline + req, target)
    if first.returncode != 0:
        progress(f"downloading wheels for CPython {target.version} {target.machine} into {cache}")
        fetched = _pip_download(["--find-links", str(cache), "--dest", str(cache)] + req, target)
        if fetched.returncode != 0:
            raise ServiceError(
                f"pip download could not get wheels for CPython {target.version} "
                f"({target.machine}, glibc {target.glibc}) for {requirements_file.name}:\n{_problem(fetched.stderr)}\n"
                "Only binary wheels can be installed into the image offline: pin a version that publishes "
                "a manylinux wheel for this Python, or check that the package index is reachable."
            )
        again = _pip_download(offline + req, target)
        if again.returncode != 0:  # pragma: no cover - pip resolved online but not from what it saved
            raise ServiceError(f"the wheel cache {cache} does not resolve {requirements_file.name}:\n{_problem(again.stderr)}")
    else:
        progress(f"wheels resolved from the host cache {cache} (no network)")
    names = sorted(p.name for p in dest.iterdir() if p.suffix == ".whl")
    for name in names:
        os.chmod(dest / name, 0o644)
    return names
