"""Build a model scoring image with the docker SDK.

The build context (also what ``--generate-dockerfile DIR`` writes)::

    Dockerfile          rendered from templates/docker/Dockerfile.j2
    requirements.txt    the runtime's dependencies + the user's (requirement lines only)
    wheels/             every wheel those resolve to, for the image's Python (no network in the build)
    runtime/            the pipeline_plugin package (python -m pipeline_plugin.runtime)
    app/                the entry script and its source folder   -> /var/azureml-app/
    models/<name>/<version>/<file or folder>                      -> /var/azureml-app/azureml-models/

Layers go dependencies -> runtime -> app -> models, so a new model version with the same
dependencies reuses every layer up to the model COPY.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import yaml

from .. import __version__, settings
from ..errors import ConfigError, NotFoundError, ServiceError
from . import conda as conda_env
from . import wheelhouse
from .spec import ModelRef, PackageResult, PackageSpec

APP_DIR = "/var/azureml-app"
MODELS_DIR = APP_DIR + "/azureml-models"
UID = 10001
#: what the scoring runtime imports, when the installed metadata cannot say (kept equal to pyproject's `runtime` extra)
RUNTIME_REQUIREMENTS = ["uvicorn[standard]>=0.29", "werkzeug>=3.0", "inference-schema>=1.7", "numpy"]
SCORERS = Path(__file__).resolve().parent / "scorers"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")  # as render accepts: 3+g1
_REPOSITORY = re.compile(
    r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_BASE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]*(@sha256:[0-9a-f]{64})?$")


# ---------------------------------------------------------------------------- input checks

def split_model_arg(value: str, what: str = "PATH",
                    example: str = "e.g. --model churn:3=./outputs/model.pkl") -> tuple[str, str, str]:
    """``NAME:VERSION=<what>`` (the --model flag) -> (name, version, the rest as typed); ConfigError
    naming the flag, the value and the fix (``example``)."""
    left, sep, rest = value.partition("=")
    if not sep or not rest:
        raise ConfigError(f"--model '{value}': expected NAME:VERSION={what} ({example})")
    name, sep, version = left.rpartition(":")
    if not sep or not name or not version:
        raise ConfigError(f"--model '{value}': the part before '=' must be NAME:VERSION ({example})")
    check_model_ref(name, version, "--model", value)
    return name, version, rest


def parse_model_arg(value: str) -> ModelRef:
    """``NAME:VERSION=PATH`` (the --model flag) -> ModelRef; ConfigError naming flag, value and fix."""
    name, version, path = split_model_arg(value)
    return ModelRef(name=name, version=version, path=Path(path).expanduser())


def check_model_ref(name: str, version: str, flag: str = "--model", value: str | None = None) -> None:
    shown = value if value is not None else f"{name}:{version}"
    if not _NAME.match(name):
        raise ConfigError(
            f"{flag} '{shown}': model name '{name}' may use letters, digits, '.', '_' and '-' only "
            "and must start with a letter or digit, e.g. churn-model"
        )
    if not _VERSION.match(version):
        raise ConfigError(
            f"{flag} '{shown}': version '{version}' may use letters, digits, '.', '_', '+' and '-' only "
            "(it becomes a folder name), e.g. 3"
        )


def split_image(image: str) -> tuple[str, str]:
    """``repo[:tag]`` -> (repo, tag); ConfigError unless it is a valid reference with a tag."""
    repo, tag = image, ""
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = image.rpartition(":")
    if not tag:
        raise ConfigError(f"--image '{image}': give a tag, REPOSITORY:TAG (e.g. --image {image or 'churn'}:3)")
    if not _REPOSITORY.match(repo) or not _TAG.match(tag):
        raise ConfigError(
            f"--image '{image}': not a valid image reference; the repository is lowercase letters, digits "
            "and . _ - separated by '/', optionally after a registry host:port; the tag is up to 128 of "
            "letters, digits, '_', '.', '-' (e.g. localhost:5000/churn:3)"
        )
    return repo, tag


def validate(spec: PackageSpec) -> None:
    if not spec.models:
        raise ConfigError("no model given: pass --model NAME:VERSION=PATH (at least one)")
    seen: set[tuple[str, str]] = set()
    for model in spec.models:
        check_model_ref(model.name, model.version)
        if (model.name, model.version) in seen:
            raise ConfigError(f"--model {model.name}:{model.version} is given twice; give each model version once")
        seen.add((model.name, model.version))
        if not model.path.exists():
            raise ConfigError(
                f"--model {model.name}:{model.version}={model.path}: no such file or folder; "
                "give the path of the registered model's file or folder"
            )
    split_image(spec.image)
    if not _BASE_REF.match(spec.base_image or ""):
        raise ConfigError(
            f"--base-image '{spec.base_image}': not an image reference; use REPOSITORY[:TAG][@DIGEST], "
            f"e.g. {settings.DEFAULT_BASE_IMAGE}"
        )
    if spec.requirements and spec.conda:
        raise ConfigError("--requirements and --conda were both given; pass one of them (they are alternatives)")
    for flag, path in (("--requirements", spec.requirements), ("--conda", spec.conda)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{flag} {path}: no such file; pass the path of an existing file")
    if spec.source_dir is not None and not Path(spec.source_dir).is_dir():
        raise ConfigError(f"--source-dir {spec.source_dir}: no such folder; pass the folder holding the scoring code")
    if spec.entry_script is not None and resolve_entry_script(spec) is None:
        where = f" (looked in --source-dir {spec.source_dir} and the current folder)" if spec.source_dir else ""
        raise ConfigError(f"--entry-script {spec.entry_script}: no such file{where}; pass the path of score.py")
    if spec.entry_script is None and spec.source_dir is not None:
        raise ConfigError(
            f"--source-dir {spec.source_dir} was given without --entry-script; pass the script in that folder "
            "(e.g. --entry-script score.py), or drop --source-dir for no-code packaging"
        )
    if spec.entry_script is None and len(spec.models) != 1:
        raise ConfigError(
            "no --entry-script: no-code packaging serves exactly one model (an MLflow model folder or an "
            f".onnx file), got {len(spec.models)}; pass --entry-script score.py to serve several"
        )
    if spec.generate_dockerfile is not None:
        out = Path(spec.generate_dockerfile)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"--generate-dockerfile {out}: the folder exists and is not empty; pass a new or empty folder")


def resolve_entry_script(spec: PackageSpec) -> Path | None:
    """Azure resolves the entry script against the source directory first."""
    script = Path(spec.entry_script)  # type: ignore[arg-type]
    candidates = [script] if script.is_absolute() else []
    if not script.is_absolute():
        if spec.source_dir is not None:
            candidates.append(Path(spec.source_dir) / script)
        candidates.append(script)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    return None


# ---------------------------------------------------------------------------- models

def model_dir_env(models: list[ModelRef]) -> str:
    """AZUREML_MODEL_DIR as Azure ML sets it: the model's own folder for one model, else the root."""
    if len(models) == 1:
        return f"{MODELS_DIR}/{models[0].name}/{models[0].version}"
    return MODELS_DIR


def _files(path: Path) -> Iterable[tuple[str, Path]]:
    """(relative posix name, path) of every file under ``path`` (or the file itself), sorted."""
    if path.is_file():
        yield path.name, path
        return
    for child in sorted(path.rglob("*")):
        if child.is_file():
            yield path.name + "/" + child.relative_to(path).as_posix(), child


def model_digest(models: list[ModelRef]) -> str:
    """sha256 over each model's name, version, file names and contents (order-independent of input)."""
    total = hashlib.sha256()
    for model in sorted(models, key=lambda m: (m.name, m.version)):
        total.update(f"model {model.name} {model.version}\n".encode())
        for rel, path in _files(model.path):
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            total.update(f"{h.hexdigest()}  {rel}\n".encode())
    return "sha256:" + total.hexdigest()


def layout_models(models: list[ModelRef], dest: Path) -> None:
    """Copy each model to ``dest/<name>/<version>/<file or folder name>`` (Azure's layout)."""
    for model in models:
        target = dest / model.name / model.version
        target.mkdir(parents=True, exist_ok=True)
        src = model.path.resolve()
        if src.is_dir():
            shutil.copytree(src, target / src.name, symlinks=False)
        else:
            shutil.copyfile(src, target / src.name)


# ---------------------------------------------------------------------------- requirements

def runtime_requirements() -> list[str]:
    try:
        reqs = importlib.metadata.requires("pipeline-plugin") or []
    except importlib.metadata.PackageNotFoundError:
        return list(RUNTIME_REQUIREMENTS)
    found = [r.split(";")[0].strip() for r in reqs if re.search(r"extra\s*==\s*['\"]runtime['\"]", r)]
    # an install made before a requirement was added (an editable checkout) still gets it
    names = {_project_name(r) for r in found}
    return found + [r for r in RUNTIME_REQUIREMENTS if _project_name(r) not in names]


def _project_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


_INDEX_OPTION = re.compile(r"^(--index-url|-i|--extra-index-url|--find-links|-f|--trusted-host|--no-index|--pre|--prefer-binary)\b")


def read_requirement_lines(path: Path, flag: str, _seen: set[Path] | None = None) -> tuple[list[str], list[str]]:
    """(requirement lines, index options) from a pip requirements file; includes are inlined.

    Requirements that cannot be installed from wheels offline (editable, local paths, VCS URLs)
    are an error naming the line and the fix.
    """
    seen = _seen if _seen is not None else set()
    path = path.resolve()
    if path in seen:
        return [], []
    seen.add(path)
    reqs: list[str] = []
    options: list[str] = []
    text = path.read_text()
    for number, raw in enumerate(text.replace("\\\n", " ").splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        include = re.match(r"^(-r|--requirement|-c|--constraint)\s*=?\s*(\S+)$", line)
        if include:
            sub_reqs, sub_opts = read_requirement_lines(path.parent / include.group(2), flag, seen)
            reqs += sub_reqs
            options += sub_opts
            continue
        if _INDEX_OPTION.match(line):
            options.append(line)
            continue
        if line.startswith("-e") or line.startswith("--editable") or re.match(r"^(\.|/|~|file:|git\+|hg\+|svn\+|bzr\+)", line) or " @ " in line and "://" in line:
            raise ConfigError(
                f"{flag} {path}:{number}: '{line}' cannot be installed offline from a wheelhouse; "
                "publish it as a wheel to an index and require it by name, or put its code in --source-dir"
            )
        if line.startswith("-"):
            raise ConfigError(f"{flag} {path}:{number}: pip option '{line}' is not supported here; remove it")
        reqs.append(line)
    return reqs, options


# ---------------------------------------------------------------------------- base image

@dataclass(frozen=True)
class BaseInfo:
    python: str  # full version, e.g. 3.11.2
    target: wheelhouse.TargetPython


_PROBE = (
    "import json, platform, sys; "
    "print(json.dumps({'python': platform.python_version(), 'libc': platform.libc_ver(), "
    "'machine': platform.machine()}))"
)


def inspect_base(client, base_image: str, progress: Callable[[str], None]) -> BaseInfo:
    """Ask the base image which Python, glibc and architecture it has (cached by image id)."""
    import docker

    try:
        image = client.images.get(base_image)
    except docker.errors.ImageNotFound as exc:
        hint = (
            " build it with `pipeline-plugin base-image --tag " + base_image + "`"
            if base_image == settings.DEFAULT_BASE_IMAGE
            else " pull or build it first, or pass --base-image " + settings.DEFAULT_BASE_IMAGE
        )
        raise NotFoundError(f"--base-image {base_image}: no such image in the Docker Engine;{hint}") from exc
    cache_file = wheelhouse.cache_dir().parent / "base-images.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    facts = cache.get(image.id)
    if facts is None:
        progress(f"inspecting the Python in {base_image}")
        try:
            out = client.containers.run(image.id, ["python3", "-c", _PROBE], remove=True, entrypoint=[], network_disabled=True)
            facts = json.loads(out.decode().strip().splitlines()[-1])
        except (docker.errors.ContainerError, docker.errors.APIError, ValueError, IndexError) as exc:
            raise ConfigError(
                f"--base-image {base_image}: `python3` does not run in it ({exc}); the base image needs a python3 "
                f"with venv and pip, e.g. {settings.DEFAULT_BASE_IMAGE} from `pipeline-plugin base-image`"
            ) from exc
        cache[image.id] = facts
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            os.replace(tmp, cache_file)
        except OSError:
            pass
    libc_name, libc_version = (facts.get("libc") or ["", ""])[:2]
    if libc_name != "glibc" or not libc_version:
        raise ConfigError(
            f"--base-image {base_image}: its C library is '{libc_name or 'unknown'}', not glibc; manylinux wheels "
            f"need a glibc base such as {settings.DEFAULT_BASE_IMAGE}"
        )
    python = facts["python"]
    target = wheelhouse.TargetPython(
        version=".".join(python.split(".")[:2]),
        glibc=".".join(libc_version.split(".")[:2]),
        machine=facts["machine"],
    )
    return BaseInfo(python=python, target=target)


def default_base_info() -> BaseInfo:
    """What the default bookworm base has, for --generate-dockerfile without a Docker Engine."""
    return BaseInfo(python="3.11.2", target=wheelhouse.TargetPython())


# ---------------------------------------------------------------------------- no-code scorers

@dataclass
class NoCode:
    kind: str  # "mlflow-sklearn" | "onnx"
    scorer: str  # file name under scorers/
    settings: dict
    requirements: list[str]


def no_code_plan(model: ModelRef, base: BaseInfo, progress: Callable[[str], None]) -> NoCode:
    path = model.path.resolve()
    if path.is_dir() and (path / "MLmodel").is_file():
        return _mlflow_plan(model, path, base, progress)
    onnx_files = [path] if path.suffix == ".onnx" and path.is_file() else sorted(path.glob("*.onnx")) if path.is_dir() else []
    if len(onnx_files) == 1:
        rel = path.name if path.is_file() else f"{path.name}/{onnx_files[0].name}"
        return NoCode("onnx", "onnx_model.py", {"model_file": rel}, ["onnxruntime", "numpy"])
    raise ConfigError(
        f"--model {model.name}:{model.version}={model.path}: no --entry-script was given and this is neither an "
        "MLflow model folder (with an MLmodel file) nor a single .onnx file; pass --entry-script score.py"
    )


def _mlflow_plan(model: ModelRef, path: Path, base: BaseInfo, progress: Callable[[str], None]) -> NoCode:
    where = f"--model {model.name}:{model.version}={model.path}"
    try:
        mlmodel = yaml.safe_load((path / "MLmodel").read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: MLmodel is not valid YAML ({exc})") from exc
    flavors = mlmodel.get("flavors") or {}
    sk = flavors.get("sklearn")
    if not sk:
        raise ConfigError(
            f"{where}: no-code packaging supports MLflow models with the sklearn flavor; this one has "
            f"{', '.join(sorted(flavors)) or 'no flavors'}. Pass --entry-script score.py to serve it"
        )
    fmt = sk.get("serialization_format", "cloudpickle")
    if fmt not in ("skops", "cloudpickle", "pickle"):
        raise ConfigError(
            f"{where}: sklearn serialization_format '{fmt}' is not supported without code (skops, cloudpickle or "
            "pickle); pass --entry-script score.py"
        )
    pickled = sk.get("pickled_model") or ("model.skops" if fmt == "skops" else "model.pkl")
    if not (path / pickled).is_file():
        raise ConfigError(f"{where}: MLmodel names pickled_model '{pickled}' but the folder has no such file")
    pyfunc = flavors.get("python_function") or {}
    wanted = str(pyfunc.get("python_version") or "")
    if wanted and ".".join(wanted.split(".")[:2]) != base.target.version:
        progress(f"warning: the model was saved with Python {wanted}; the image has {base.python}")
    reqs: list[str] = []
    req_file = path / "requirements.txt"
    if req_file.is_file():
        lines, _ = read_requirement_lines(req_file, where + " requirements.txt")
        reqs = [r for r in lines if not re.match(r"^mlflow(-skinny)?\b", r, re.I)]
    else:
        reqs = ["scikit-learn", "numpy"]
    if fmt in ("skops", "cloudpickle") and not any(re.match(rf"^{fmt}\b", r, re.I) for r in reqs):
        reqs.append(fmt)
    columns = None
    signature = mlmodel.get("signature") or {}
    try:
        inputs = json.loads(signature.get("inputs") or "null")
        if isinstance(inputs, list) and all(isinstance(c, dict) and c.get("name") for c in inputs):
            columns = [c["name"] for c in inputs]
    except (TypeError, ValueError):
        columns = None
    return NoCode(
        "mlflow-sklearn",
        "mlflow_sklearn.py",
        {
            "model_folder": path.name,
            "pickled_model": pickled,
            "serialization_format": fmt,
            "skops_trusted_types": sk.get("skops_trusted_types"),
            "columns": columns,
        },
        reqs,
    )


# ---------------------------------------------------------------------------- context

def _normalise_modes(root: Path) -> None:
    """World-readable, root-owned-style modes so the non-root user can read and the cache keys are stable."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                continue
            os.chmod(p, 0o755 if os.stat(p).st_mode & 0o111 else 0o644)


def _copy_runtime(dest: Path) -> None:
    """pipeline_plugin/__init__.py and pipeline_plugin/runtime/ (the runtime imports nothing else from
    the package): ~100 KB, and the layer changes only when the runtime does."""
    package = Path(__file__).resolve().parent.parent
    (dest / "pipeline_plugin").mkdir(parents=True)
    shutil.copyfile(package / "__init__.py", dest / "pipeline_plugin" / "__init__.py")
    shutil.copytree(
        package / "runtime",
        dest / "pipeline_plugin" / "runtime",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )


def _label_value(value: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", " ", str(value))


def image_labels(spec: PackageSpec, digest: str, entry: str) -> dict[str, str]:
    names = ",".join(m.name for m in spec.models)
    versions = ",".join(m.version for m in spec.models)
    models = ", ".join(f"{m.name}:{m.version}" for m in spec.models)
    # no org.opencontainers.image.created: the same inputs must give the same image (cache hits,
    # --generate-dockerfile equivalence); Docker records the creation time itself
    labels = {
        "org.opencontainers.image.title": names,
        "org.opencontainers.image.version": versions,
        "org.opencontainers.image.description": f"pipeline-plugin scoring image for {models}",
        "org.opencontainers.image.base.name": spec.base_image,
        "io.pipeline-plugin.model.name": names,
        "io.pipeline-plugin.model.version": versions,
        "io.pipeline-plugin.model.source": spec.source or "local",
        "io.pipeline-plugin.model.digest": digest,
        "io.pipeline-plugin.entry-script": entry,
        "io.pipeline-plugin.plugin-version": __version__,
    }
    if spec.registry:
        labels["io.pipeline-plugin.model.registry"] = spec.registry
    return {k: _label_value(v) for k, v in labels.items()}


def dockerfile_quote(value: str) -> str:
    """A Dockerfile double-quoted word that stays literal: no line breaks, and neither quotes,
    backslashes nor ``$`` (variable substitution) keep their meaning."""
    value = _label_value(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def render_dockerfile(base_image: str, entry_script: str, model_dir: str, labels: dict[str, str]) -> str:
    import jinja2

    template_dir = settings.data_dir("templates") / "docker"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["dockerfile_quote"] = dockerfile_quote
    return env.get_template("Dockerfile.j2").render(
        plugin_version=__version__,
        base_image=base_image,
        uid=UID,
        port=settings.RUNTIME_PORT,
        entry_script=dockerfile_quote(entry_script),
        model_dir=dockerfile_quote(model_dir),
        labels=labels,
    )


def write_context(spec: PackageSpec, ctx: Path, base: BaseInfo, progress: Callable[[str], None]) -> tuple[dict[str, str], str]:
    """Write the whole build context into ``ctx``; returns (labels, model digest)."""
    app = ctx / "app"
    app.mkdir(parents=True)
    # 1. the entry script (or a generated scorer) and its source folder
    user_reqs: list[str] = []
    index_options: list[str] = []
    if spec.entry_script is not None:
        script = resolve_entry_script(spec)
        assert script is not None  # validate() checked
        entry_rel = script.name
        if spec.source_dir is not None:
            src = Path(spec.source_dir).resolve()
            shutil.copytree(src, app, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git"))
            if (app / "azureml-models").exists():
                raise ConfigError(
                    f"--source-dir {spec.source_dir}: it has an 'azureml-models' entry, which would hide the models "
                    "(/var/azureml-app/azureml-models); rename it"
                )
            if script.is_relative_to(src):
                entry_rel = script.relative_to(src).as_posix()
            else:
                shutil.copyfile(script, app / script.name)
        else:
            shutil.copyfile(script, app / script.name)
        entry_label = entry_rel
    else:
        plan = no_code_plan(spec.models[0], base, progress)
        progress(f"no --entry-script: generating a {plan.kind} scorer")
        text = (SCORERS / plan.scorer).read_text()
        (app / "score.py").write_text(text)
        (app / "pipeline_plugin_scorer.json").write_text(json.dumps(plan.settings, indent=2, sort_keys=True) + "\n")
        entry_rel = "score.py"
        entry_label = f"generated:{plan.kind}"
        user_reqs = plan.requirements
    # 2. requirements: the runtime's, then the user's (requirements file or the conda pip section)
    if spec.requirements is not None:
        lines, index_options = read_requirement_lines(Path(spec.requirements), "--requirements")
        user_reqs += lines
    elif spec.conda is not None:
        env = conda_env.parse(Path(spec.conda))
        if not conda_env.python_matches(env.python, base.python):
            raise ConfigError(
                f"--conda {spec.conda}: asks for python {env.python} but the base image {spec.base_image} has "
                f"Python {base.python}; change the pin to python={base.target.version} or pass a --base-image with that Python"
            )
        for line in env.pip:
            if _INDEX_OPTION.match(line):
                index_options.append(line)
            elif line.startswith("-"):
                raise ConfigError(f"--conda {spec.conda}: pip entry '{line}' is not supported here; list requirements by name")
            else:
                user_reqs.append(line)
    requirements = runtime_requirements() + user_reqs
    (ctx / "requirements.txt").write_text("\n".join(requirements) + "\n")
    # 3. the wheelhouse, prepared here (the download file may carry index options; the image's may not)
    with tempfile.TemporaryDirectory(prefix="pipeline-plugin-req-") as tmp:
        download_file = Path(tmp) / "requirements.txt"
        download_file.write_text("\n".join(index_options + requirements) + "\n")
        what = (
            f"--requirements {spec.requirements}" if spec.requirements is not None
            else f"--conda {spec.conda}" if spec.conda is not None
            else "the generated scorer's requirements" if spec.entry_script is None
            else "the runtime's requirements"
        ) + f" (with the runtime's: {', '.join(runtime_requirements())})"
        wheels = wheelhouse.prepare(download_file, ctx / "wheels", base.target, progress, what=what)
    progress(f"wheelhouse ready: {len(wheels)} wheel(s)")
    # 4. the runtime, 5. the models
    _copy_runtime(ctx / "runtime")
    progress("computing the model digest and laying out the model files")
    digest = model_digest(spec.models)
    layout_models(spec.models, ctx / "models")
    labels = image_labels(spec, digest, entry_label)
    dockerfile = render_dockerfile(spec.base_image, entry_rel, model_dir_env(spec.models), labels)
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / ".dockerignore").write_text("# everything in this folder is part of the image\n")
    _normalise_modes(ctx)
    return labels, digest


# ---------------------------------------------------------------------------- build

def docker_client(timeout: int = 1800):
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception as exc:  # noqa: BLE001 - every failure here means the same to the user
        raise ServiceError(f"Docker Engine does not answer ({exc}); start it with `bash scripts/services.sh docker`") from exc


def _stream_build(client, ctx: Path, image: str, progress: Callable[[str], None], no_cache: bool = False) -> str:
    import docker

    image_id = None
    tail: list[str] = []
    step = ""
    try:
        # network "none": the wheelhouse makes the build offline, and this proves it
        stream = client.api.build(
            path=str(ctx), tag=image, rm=True, forcerm=True, pull=False, decode=True, network_mode="none",
            nocache=no_cache,
        )
        for chunk in stream:
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                raise ServiceError(
                    f"docker build of {image} failed at {step or 'the start'}: {detail.strip()}\n" + "\n".join(tail[-15:])
                )
            aux = chunk.get("aux") or {}
            if aux.get("ID"):
                image_id = aux["ID"]
            text = chunk.get("stream", "")
            for line in text.splitlines():
                line = line.rstrip()
                if not line:
                    continue
                tail = (tail + [line])[-40:]
                if line.startswith("Step "):
                    step = line
                    progress(line if len(line) < 160 else line[:157] + "...")
                elif "Using cache" in line:
                    progress("  (cached)")
                elif line.startswith(("Installing collected packages", "Successfully installed")):
                    progress("  " + (line if len(line) < 160 else line[:157] + "..."))
                elif line.startswith("Successfully built"):
                    image_id = image_id or line.split()[-1]
    except docker.errors.APIError as exc:
        raise ServiceError(f"docker build of {image} failed: {exc.explanation or exc}") from exc
    if not image_id:
        raise ServiceError(f"docker build of {image} ended without an image id:\n" + "\n".join(tail[-15:]))
    return client.images.get(image_id).id


def push(client, image: str, progress: Callable[[str], None]) -> str:
    """Push ``image``; returns ``repo@sha256:...``."""
    import docker

    repo, tag = split_image(image)
    progress(f"pushing {image}")
    digest = None
    last_status = ""
    try:
        for chunk in client.images.push(repo, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise ServiceError(f"docker push of {image} failed: {chunk.get('errorDetail', {}).get('message') or chunk['error']}")
            aux = chunk.get("aux") or {}
            if aux.get("Digest"):
                digest = aux["Digest"]
            status = chunk.get("status", "")
            if status and status != last_status and status in ("Pushed", "Layer already exists", "Mounted from"):
                progress(f"  {chunk.get('id', '')}: {status}")
            last_status = status
    except docker.errors.APIError as exc:
        raise ServiceError(f"docker push of {image} failed: {exc.explanation or exc}") from exc
    if not digest:
        raise ServiceError(f"docker push of {image} reported no digest")
    return f"{repo}@{digest}"


def build(spec: PackageSpec, progress: Callable[[str], None] = lambda _m: None) -> PackageResult:
    """Build (or write the context for) the image ``spec`` describes."""
    validate(spec)
    generate = Path(spec.generate_dockerfile) if spec.generate_dockerfile is not None else None
    if generate is not None and spec.push:
        raise ConfigError("--push and --generate-dockerfile exclude each other: nothing is built to push")
    client = None
    if generate is None:
        client = docker_client()
        base = inspect_base(client, spec.base_image, progress)
    else:
        try:
            client = docker_client(timeout=30)
            base = inspect_base(client, spec.base_image, progress)
        except (ServiceError, NotFoundError):
            # the wheels are chosen for this assumption: say so even with --quiet
            print(f"warning: cannot inspect {spec.base_image} (no Docker Engine, or no such image); the wheelhouse "
                  "assumes Debian bookworm (CPython 3.11, glibc 2.36, x86_64): build on a machine that has the base "
                  "image if yours differs", file=sys.stderr)
            base = default_base_info()
    started = time.monotonic()
    if generate is not None:
        # written beside the folder and moved into place when complete: a failure leaves nothing
        # behind, and running the same command again works
        generate.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{generate.name}.partial-", dir=generate.parent))
        try:
            labels, digest = write_context(spec, partial, base, progress)
            if generate.exists():
                generate.rmdir()  # checked empty by validate()
            partial.rename(generate)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        progress(f"wrote the Dockerfile and its build context to {generate}; build it with `docker build --network none -t {spec.image} {generate}`")
        return PackageResult(spec.image, None, None, labels, digest, generate)
    ctx = Path(tempfile.mkdtemp(prefix="pipeline-plugin-build-"))
    try:
        labels, digest = write_context(spec, ctx, base, progress)
        progress(f"building {spec.image} from {spec.base_image}")
        image_id = _stream_build(client, ctx, spec.image, progress, spec.no_cache)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    progress(f"built {spec.image} ({image_id[:19]}) in {time.monotonic() - started:.1f} s")
    registry_digest = push(client, spec.image, progress) if spec.push else None
    return PackageResult(spec.image, image_id, registry_digest, labels, digest, None)
