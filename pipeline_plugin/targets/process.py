"""The ``process`` target: the scoring runtime as a local process, no Docker needed.

What it runs: a **package directory**, the folder ``pipeline-plugin package --generate-dockerfile
DIR`` writes (the image's build context). The spec's ``image`` is that folder's path (or, once it
was deployed, its content digest ``sha256:...``, so ``promote`` can pass the digest that passed
staging). From the folder's ``Dockerfile`` the target reads the ``ENV`` settings the image would
have (``AZUREML_ENTRY_SCRIPT``, ``AZUREML_SOURCE_DIRECTORY``, ``AZUREML_MODEL_DIR``, ``PORT``) and the
``io.pipeline-plugin.model.*`` labels, and maps the image paths onto the folder:
``/var/azureml-app/azureml-models/...`` -> ``DIR/models/...``, ``/var/azureml-app/...`` ->
``DIR/app/...``, ``/opt/pipeline-plugin`` -> ``DIR/runtime`` (the runtime shipped in the folder; the
installed ``pipeline_plugin.runtime`` when the folder has none).

The process runs ``python -m pipeline_plugin.runtime`` with the Python that runs pipeline-plugin,
so the model's requirements (``DIR/requirements.txt``) must be installed there; missing ones are
reported before start. CPU and memory limits are recorded but not enforced (use the docker target
for limits). Scoring keys are passed in a file readable only by the owner.

Like ``docker``, each (service, env) has a stable nginx address (:mod:`.nginx_proxy`); ``update``
starts the new process on a free loopback port, waits for ``GET /readyz``, switches nginx, waits
for the drain and then stops the old process (SIGTERM, then SIGKILL after 10 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NotFoundError
from . import Deployment, DeploymentSpec, ProgressFn, stable_uris, state_root
from .nginx_proxy import pick_port
from .state import LocalTarget, ServiceState, now, wait_ready

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0
IMAGE_APP_ROOT = "/var/azureml-app"
IMAGE_MODELS = "/var/azureml-app/azureml-models"
IMAGE_RUNTIME = "/opt/pipeline-plugin"
MODEL_LABEL = "io.pipeline-plugin.model."
#: environment the runtime inherits from pipeline-plugin's own (nothing else leaks into it)
PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")

_PROCS: dict[int, subprocess.Popen] = {}  # children of this process, reaped on stop


def _dockerfile_statements(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, with line continuations joined."""
    joined = re.sub(r"\\\s*\n", " ", text)
    out: list[tuple[str, str]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            out = []  # only the last stage's settings describe the image
        out.append((word.upper(), rest.strip()))
    return out


_PAIR = re.compile(r'([A-Za-z0-9_.\-]+)=("(?:[^"\\]|\\.)*"|\S*)')


def _pairs(text: str) -> dict[str, str]:
    out = {}
    for key, value in _PAIR.findall(text):
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        out[key] = value
    return out


class PackageDir:
    """A ``package --generate-dockerfile`` folder, read as the process target needs it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).resolve()
        dockerfile = self.path / "Dockerfile"
        if not dockerfile.is_file():
            raise ConfigError(
                f"image {str(path)!r} is not a package directory (no Dockerfile in it); for --target process pass "
                "the folder written by `pipeline-plugin package --generate-dockerfile DIR`"
            )
        self.env: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        for word, rest in _dockerfile_statements(dockerfile.read_text(encoding="utf-8")):
            if word == "ENV":
                self.env.update(_pairs(rest))
            elif word == "LABEL":
                self.labels.update(_pairs(rest))

    def host_path(self, image_path: str) -> str:
        """Map a path inside the image to the folder (models/, app/, runtime/)."""
        for prefix, local in ((IMAGE_MODELS, "models"), (IMAGE_APP_ROOT, "app"), (IMAGE_RUNTIME, "runtime")):
            if image_path == prefix or image_path.startswith(prefix + "/"):
                return str(self.path / local) + image_path[len(prefix):]
        return image_path

    def runtime_env(self) -> dict[str, str]:
        env: dict[str, str] = {"AML_APP_ROOT": str(self.path / "app")}
        for name in ("AZUREML_ENTRY_SCRIPT", "AZUREML_SOURCE_DIRECTORY", "AZUREML_MODEL_DIR"):
            if name in self.env:
                value = self.env[name]
                env[name] = self.host_path(value) if value.startswith("/") else value
        for name, value in self.env.items():
            if name not in env and name not in ("PATH", "PYTHONPATH", "PORT", "HOME"):
                env[name] = value
        runtime = self.path / "runtime"
        if runtime.is_dir():
            env["PYTHONPATH"] = str(runtime)
        return env

    def digest(self) -> str:
        """sha256 over the folder's file names and contents: what the process runs."""
        h = hashlib.sha256()
        for file in sorted(p for p in self.path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            h.update(str(file.relative_to(self.path)).encode() + b"\0")
            with open(file, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            h.update(b"\0")
        return "sha256:" + h.hexdigest()

    def missing_requirements(self) -> list[str]:
        from importlib import metadata

        req = self.path / "requirements.txt"
        if not req.is_file():
            return []
        missing = []
        for line in req.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-"):
                continue
            name = re.split(r"[\s<>=!~;\[@]", line, maxsplit=1)[0]
            try:
                metadata.version(name)
            except metadata.PackageNotFoundError:
                missing.append(name)
        return missing


def _proc_start_time(pid: int) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return fields[19]  # starttime: with the pid, names one process for good


class ProcessTarget(LocalTarget):
    name = "process"

    def __init__(self, state_dir: Path | None = None, ready_timeout: float = READY_TIMEOUT_S) -> None:
        super().__init__(state_dir, ready_timeout)

    # -- images: package directories, addressable by digest once deployed ---------------------
    def _location(self, digest: str) -> str | None:
        """The package directory deployed as ``digest`` (recorded in the store)."""
        records = self.records()
        found = records.image_location(digest)
        if found is None and records.store.embedded:  # an images.json from before the store
            try:
                found = json.loads((state_root(self.name, self._state_dir) / "images.json").read_text()).get(digest)
            except (OSError, ValueError):
                found = None
        return found

    def _remember(self, digest: str, path: Path) -> None:
        self.records().remember_image(digest, str(path))

    def resolve(self, image: str) -> tuple[PackageDir, str]:
        if image.startswith("sha256:"):
            path = self._location(image)
            if path is None:
                raise NotFoundError(
                    f"image {image!r} was never deployed with the process target, so its package directory is unknown; "
                    "pass the package directory's path as --image"
                )
            package = PackageDir(Path(path))
            digest = package.digest()
            if digest != image:
                raise NotFoundError(f"package directory {path} changed since {image} was deployed from it (now {digest})")
            return package, digest
        path = Path(image).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"image {image!r} is not a directory; for --target process pass the folder written by "
                "`pipeline-plugin package --generate-dockerfile DIR` (or use --target docker for an image reference)"
            )
        package = PackageDir(path)
        return package, package.digest()

    # -- internals ---------------------------------------------------------------------------
    def _stop_all(self, state: ServiceState) -> None:
        for instance in self._instances(state):
            self._stop(instance)

    def _instances(self, state: ServiceState) -> list[dict[str, Any]]:
        out = []
        for f in sorted((state.directory / "instances").glob("*/instance.json")):
            try:
                out.append(json.loads(f.read_text()))
            except (OSError, ValueError):
                continue
        return out

    def _apply(self, spec: DeploymentSpec, progress: ProgressFn) -> Deployment:
        state = self._state(spec.service, spec.env)
        with state.locked():
            package, digest = self.resolve(spec.image)
            record = state.read()
            address = self._address(state)
            port = spec.port or (record or {}).get("port") or pick_port()
            wanted = hashlib.sha256(
                json.dumps(
                    [digest, port, spec.cpu_cores, spec.memory_gb, sorted(spec.environment.items()),
                     hashlib.sha256("\n".join(spec.keys).encode()).hexdigest(), sorted(spec.labels.items())]
                ).encode()
            ).hexdigest()[:16]
            if (
                record is not None
                and record.get("spec_hash") == wanted
                and self._running(record["instance"])
                and address.running()
                and address.served_generation(port) == str(record.get("generation"))
            ):
                progress(f"{spec.service}/{spec.env} already runs {digest[:19]} at 127.0.0.1:{port}")
                return self._refresh(state, record)
            missing = package.missing_requirements()
            if missing:
                progress(
                    f"warning: {', '.join(missing)} from {package.path / 'requirements.txt'} are not installed for "
                    f"{sys.executable}; install them with `{sys.executable} -m pip install -r {package.path / 'requirements.txt'}`"
                )
            if spec.replicas > 1:
                progress(f"note: the process target runs one process per environment; replicas={spec.replicas} applies on docker and kubernetes")
            if spec.cpu_cores or spec.memory_gb:
                progress("note: the process target records cpu_cores/memory_gb but does not enforce them")
            self._remember(digest, package.path)
            generation = int((record or {}).get("generation") or 0) + 1
            instance = self._start(spec, package, digest, state, progress)
            what = f"process {instance['name']} (pid {instance['pid']})"
            try:
                wait_ready("127.0.0.1", instance["port"], self.ready_timeout, lambda: self._exited(instance), progress, what)
                progress(f"{what} is ready")
                address.switch(port, f"127.0.0.1:{instance['port']}", str(generation), progress)
            except BaseException:
                if record is not None and self._running(record["instance"]) and address.running():
                    address.switch_back(  # a no-op unless nginx already left the previous process
                        record["port"], f"127.0.0.1:{record['instance']['port']}", str(record["generation"]), progress,
                        "the previous process",
                    )
                self._stop(instance)
                tail = self._log_tail(instance)
                if tail:
                    progress(f"last lines of {what}:\n{tail}")
                raise
            deployment = Deployment(
                service=spec.service,
                env=spec.env,
                image=str(package.path) if not spec.image.startswith("sha256:") else spec.image,
                image_id=digest,
                model=package.labels.get(MODEL_LABEL + "name"),
                version=package.labels.get(MODEL_LABEL + "version"),
                created_at=instance["created"],
                details={
                    "target": self.name,
                    "port": port,
                    "package_dir": str(package.path),
                    "pid": instance["pid"],
                    "process": instance["name"],
                    "log": instance["log"],
                    "cpu_cores": spec.cpu_cores,
                    "memory_gb": spec.memory_gb,
                    "environment": {str(k): str(v) for k, v in spec.environment.items()},
                    "labels": dict(spec.labels),
                },
                **stable_uris("127.0.0.1", port),
            )
            new_record = {"port": port, "generation": generation, "spec_hash": wanted, "instance": instance,
                          "deployment": deployment.to_dict()}
            state.write(new_record)
            if record is not None:
                state.append_history(record["deployment"], "replaced", replaced_by=digest)
            for other in self._instances(state):
                if other["name"] != instance["name"]:
                    progress(f"stopping the previous process {other['name']} (pid {other['pid']})")
                    self._stop(other)
            return self._refresh(state, new_record)

    def _start(self, spec: DeploymentSpec, package: PackageDir, digest: str, state: ServiceState, progress: ProgressFn) -> dict[str, Any]:
        name = f"{spec.service}-{spec.env}-{secrets.token_hex(3)}"
        directory = state.directory / "instances" / name
        directory.mkdir(parents=True)
        env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
        env.update(package.runtime_env())
        env.update({k: str(v) for k, v in spec.environment.items()})
        port = pick_port()
        env["PORT"] = str(port)
        env["PIPELINE_PLUGIN_HOST"] = "127.0.0.1"
        env["PYTHONUNBUFFERED"] = "1"
        if spec.keys:
            keys_file = directory / "scoring-keys"
            fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write("\n".join(spec.keys) + "\n")
            env["PIPELINE_PLUGIN_SCORING_KEYS_FILE"] = str(keys_file)
        log = directory / "runtime.log"
        cwd = package.path / "app" if (package.path / "app").is_dir() else package.path
        progress(f"starting process {name} from {package.path} on 127.0.0.1:{port}")
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline_plugin.runtime"],
                cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        _PROCS[proc.pid] = proc
        instance = {"name": name, "pid": proc.pid, "start_time": _proc_start_time(proc.pid), "port": port,
                    "log": str(log), "image_id": digest, "created": now()}
        (directory / "instance.json").write_text(json.dumps(instance, indent=2))
        return instance

    @staticmethod
    def _running(instance: dict[str, Any]) -> bool:
        proc = _PROCS.get(instance["pid"])
        if proc is not None and proc.poll() is not None:
            return False
        return instance.get("start_time") is not None and _proc_start_time(instance["pid"]) == instance["start_time"]

    def _exited(self, instance: dict[str, Any]) -> str | None:
        if self._running(instance):
            return None
        proc = _PROCS.get(instance["pid"])
        code = proc.returncode if proc is not None else "unknown"
        return f"it exited with code {code}: {self._log_tail(instance)}"

    @staticmethod
    def _log_tail(instance: dict[str, Any], lines: int = 20) -> str:
        try:
            return "\n".join(Path(instance["log"]).read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def _stop(self, instance: dict[str, Any]) -> None:
        pid = instance["pid"]
        if self._running(instance):
            for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while self._running(instance) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not self._running(instance):
                    break
        proc = _PROCS.pop(pid, None)
        if proc is not None:
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        directory = Path(instance["log"]).parent  # the log stays, for the history
        for name in ("instance.json", "scoring-keys"):
            (directory / name).unlink(missing_ok=True)

    def _problems(self, record: dict[str, Any]) -> list[str]:
        if not self._running(record["instance"]):
            return [f"process {record['instance']['name']} (pid {record['instance']['pid']}) is not running"]
        return []


TARGET = ProcessTarget()
