"""Prepare a wheelhouse on the host for the image's Python, so the image build needs no network.

``pip download`` runs here, outside the container, for the target interpreter and platform
(``--python-version``, ``--platform``, ``--implementation cp``, ``--only-binary=:all:``). Downloaded
wheels are kept in a host cache (``~/.cache/pipeline-plugin/wheels``, or
``$PIPELINE_PLUGIN_WHEEL_CACHE``); a build first tries to resolve from that cache alone (no
network) and only downloads what is missing. The wheels a build needs are then copied into the
build context, where ``pip install --no-index --find-links`` installs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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
    what: str | None = None,
) -> list[str]:
    """Fill ``dest`` with the wheels ``requirements_file`` resolves to for ``target``; returns their names.

    The same requirements text for the same target reuses the earlier resolution (recorded in
    ``<cache>/.resolved/``) without running pip; otherwise pip resolves from the host cache alone
    first (no network) and downloads into the cache only what is missing. So unpinned
    requirements stay at the versions first resolved until the cache is cleared: pin versions.
    """
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    # a resolution already made for the same requirements and target: no pip run at all
    key = hashlib.sha256(
        json.dumps([requirements_file.read_text(), target.version, target.glibc, target.machine]).encode()
    ).hexdigest()
    resolved = cache / ".resolved" / f"{key}.json"
    try:
        names = json.loads(resolved.read_text())
    except (OSError, ValueError):
        names = None
    if isinstance(names, list) and names and all((cache / n).is_file() for n in names):
        for name in names:
            _link_or_copy(cache / name, dest / name)
        progress(f"wheels from the host cache {cache} (same requirements as an earlier build)")
    else:
        names = _resolve(requirements_file, dest, target, progress, cache, what or requirements_file.name)
        try:
            resolved.parent.mkdir(exist_ok=True)
            tmp = resolved.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(names))
            os.replace(tmp, resolved)
        except OSError:
            pass
    for name in names:
        os.chmod(dest / name, 0o644)
    return names


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _resolve(
    requirements_file: Path, dest: Path, target: TargetPython, progress: Callable[[str], None], cache: Path, what: str
) -> list[str]:
    req = ["-r", str(requirements_file)]
    offline = ["--no-index", "--find-links", str(cache), "--dest", str(dest)]
    first = _pip_download(offline + req, target)
    if first.returncode != 0:
        progress(f"downloading wheels for CPython {target.version} {target.machine} into {cache}")
        fetched = _pip_download(["--find-links", str(cache), "--dest", str(cache)] + req, target)
        if fetched.returncode != 0:
            raise ServiceError(
                f"pip download could not get wheels for CPython {target.version} "
                f"({target.machine}, glibc {target.glibc}) for {what}:\n{_problem(fetched.stderr)}\n"
                "Only binary wheels can be installed into the image offline: pin a version that publishes "
                "a manylinux wheel for this Python, or check that the package index is reachable."
            )
        again = _pip_download(offline + req, target)
        if again.returncode != 0:  # pragma: no cover - pip resolved online but not from what it saved
            raise ServiceError(f"the wheel cache {cache} does not resolve {what}:\n{_problem(again.stderr)}")
    else:
        progress(f"wheels resolved from the host cache {cache} (no network)")
    return sorted(p.name for p in dest.iterdir() if p.suffix == ".whl")
