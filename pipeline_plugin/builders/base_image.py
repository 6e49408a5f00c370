"""Build the local Debian bookworm + python3 base image with debootstrap and `docker import`.

Nothing can be pulled from Docker Hub on an offline or air-gapped build machine, but a Debian
mirror usually is reachable (or mirrored). ``build_base_image`` bootstraps a minimal root file
system into a temporary folder, trims it, and streams it as a tar into the Docker Engine's import
endpoint with the Dockerfile changes (ENV, CMD, labels) a base image needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ConfigError, ServiceError

DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates")
#: the Python the base image ships (bookworm's python3); wheelhouses are downloaded for it
PYTHON_VERSION = "3.11"

# Dockerfile instructions applied at import (the image has no history to carry them otherwise)
CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "ENV PYTHONDONTWRITEBYTECODE=1",
    "ENV PYTHONUNBUFFERED=1",
    'LABEL org.opencontainers.image.title="pipeline-plugin base" '
    'org.opencontainers.image.description="Debian bookworm (minbase) with python3, pip and venv" '
    "io.pipeline-plugin.base.suite=bookworm",
    'CMD ["python3"]',
]

# paths removed from the root file system before import (caches, docs, apt lists)
TRIM = [
    "var/cache/apt/archives",
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/log",
]


def check_prerequisites() -> str:
    """Return the debootstrap path; ConfigError with the fix when this machine cannot build."""
    if os.geteuid() != 0:
        raise ConfigError(
            "base-image needs root: debootstrap creates device nodes and chroots into the new "
            "file system. Run it as root (sudo .venv/bin/pipeline-plugin base-image --tag TAG)."
        )
    path = shutil.which("debootstrap") or ("/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None)
    if not path:
        raise ConfigError("debootstrap is not installed; install it with `apt-get install debootstrap` and retry.")
    return path


def _unmount_below(root: Path) -> None:
    """debootstrap mounts /proc and /sys inside the target; never delete through a live mount."""
    prefix = str(root.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def _run_debootstrap(debootstrap: str, target: Path, mirror: str, progress: Callable[[str], None]) -> None:
    cmd = [
        debootstrap,
        "--variant=minbase",
        "--include=" + ",".join(PACKAGES),
        SUITE,
        str(target),
        mirror,
    ]
    progress(f"debootstrap {SUITE} from {mirror} (about a minute)")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    tail: list[str] = []
    phases = {"Retrieving": "downloading", "Validating": "downloading", "Extracting": "extracting",
              "Unpacking": "unpacking", "Configuring": "configuring"}
    phase, count = "", 0
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-15:]
        if not line.startswith("I: "):
            continue
        words = line[3:].split()
        name = phases.get(words[0] if words else "")
        if name is None:
            if words and words[0] in ("Base", "Installing", "Resolving"):
                progress("debootstrap: " + line[3:])
            continue
        if name != phase:
            if phase:
                progress(f"debootstrap: {phase} done ({count} item(s))")
            phase, count = name, 0
        count += 1
    code = proc.wait()
    if code != 0:
        raise ServiceError(
            f"debootstrap failed (exit {code}) fetching {SUITE} from {mirror}; check that the mirror is "
            "reachable or pass --mirror URL. Last output:\n" + "\n".join(tail)
        )


def _trim(root: Path) -> None:
    for rel in TRIM:
        path = root / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True, exist_ok=True)
        elif path.exists():
            path.unlink()
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    for pycache in root.glob("usr/lib/python3*/**/__pycache__"):
        shutil.rmtree(pycache, ignore_errors=True)


def _tar_stream(root: Path, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Yield a tar of ``root`` (numeric owners, devices, links preserved) in chunks."""
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with os.fdopen(write_fd, "wb") as out, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for entry in sorted(root.iterdir()):
                    tar.add(entry, arcname=entry.name, recursive=True)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the reader
            errors.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    with os.fdopen(read_fd, "rb") as src:
        while True:
            chunk = src.read(chunk_size)
            if not chunk:
                break
            yield chunk
    thread.join()
    if errors:
        raise ServiceError(f"could not write the root file system tar: {errors[0]}")


def build_base_image(
    tag: str,
    mirror: str = DEFAULT_MIRROR,
    progress: Callable[[str], None] = lambda _m: None,
    client=None,
) -> dict:
    """Bootstrap Debian bookworm and import it as ``tag``. Returns {"image", "image_id", "size", "seconds"}."""
    import docker

    if ":" not in tag.rsplit("/", 1)[-1]:
        raise ConfigError(f"--tag '{tag}' has no tag part; use REPOSITORY:TAG, e.g. pipeline-plugin/base:bookworm")
    debootstrap = check_prerequisites()
    repository, _, image_tag = tag.rpartition(":")
    try:
        client = client or docker.from_env(timeout=900)
        client.ping()
    except Exception as exc:  # noqa: BLE001
        raise ServiceError(f"Docker Engine does not answer ({exc}); start it with `bash scripts/services.sh docker`") from exc

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-plugin-base-", dir="/var/tmp"))
    target = workdir / "rootfs"
    try:
        _run_debootstrap(debootstrap, target, mirror, progress)
        _unmount_below(target)
        _trim(target)
        progress(f"importing the root file system into Docker as {tag}")
        client.api.import_image_from_stream(
            _tar_stream(target), repository=repository, tag=image_tag, changes=CHANGES
        )
        image = client.images.get(tag)
    except docker.errors.DockerException as exc:
        raise ServiceError(f"docker import of {tag} failed: {exc}") from exc
    finally:
        _unmount_below(target)
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = round(time.monotonic() - started, 1)
    size = image.attrs.get("Size", 0)
    progress(f"built {tag} ({image.id[:19]}, {size / 1e6:.0f} MB) in {seconds} s")
    return {"image": tag, "image_id": image.id, "size": size, "seconds": seconds}
