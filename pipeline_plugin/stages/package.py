"""The package stage: turn registered model version(s) and a scoring script into a container image.

``package(spec)`` is what the CLI (`pipeline-plugin package`), the local provider and the demo call.
The Docker work lives in :mod:`pipeline_plugin.builders.docker`; this module holds the small,
stable data types other modules code against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .. import settings
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..fetch import FetchedModel


@dataclass(frozen=True)
class ModelRef:
    """One registered model version: a file or a folder on the local disk."""

    name: str
    version: str
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "version", str(self.version))


@dataclass
class PackageSpec:
    """What to build.

    ``entry_script`` None means no-code packaging: the single model must be an MLflow model folder
    (with ``MLmodel``) or an ``.onnx`` file, and a scorer is generated for it.
    ``requirements`` (pip) and ``conda`` (environment.yml) are mutually exclusive.
    ``generate_dockerfile`` set: write the Dockerfile and its whole build context to that folder
    instead of building. ``source`` and ``registry`` only go into the image labels.
    """

    models: list[ModelRef]
    image: str
    entry_script: Path | None = None
    source_dir: Path | None = None
    requirements: Path | None = None
    conda: Path | None = None
    base_image: str = field(default_factory=settings.default_base_image)
    generate_dockerfile: Path | None = None
    source: str | None = None
    registry: str | None = None
    push: bool = False
    #: build every layer afresh (docker build --no-cache); the wheel cache is still used
    no_cache: bool = False


@dataclass
class PackageResult:
    image: str
    #: the local image id (sha256:...); None when only a Dockerfile was generated
    image_id: str | None
    #: the registry digest (repo@sha256:...) when pushed, else None
    digest: str | None
    labels: dict[str, str]
    #: sha256 over the model files (names and contents), also in label io.pipeline-plugin.model.digest
    model_digest: str
    #: the build context folder (the --generate-dockerfile folder, or None after a build)
    dockerfile_dir: Path | None = None

    def to_dict(self) -> dict:
        return {
            "image": self.image,
            "image_id": self.image_id,
            "digest": self.digest,
            "labels": dict(self.labels),
            "model_digest": self.model_digest,
            "dockerfile_dir": str(self.dockerfile_dir) if self.dockerfile_dir else None,
        }


def package(spec: PackageSpec, progress: Callable[[str], None] | None = None) -> PackageResult:
    """Build (or, with ``spec.generate_dockerfile``, write the context for) the model image.

    Raises ``ConfigError`` for bad input (names the field, value and fix) and ``ServiceError`` when
    Docker or the wheel download fails.
    """
    from ..builders import docker as docker_builder

    return docker_builder.build(spec, progress or (lambda _msg: None))


def parse_model(value: str) -> ModelRef:
    """Parse the ``--model NAME:VERSION=PATH`` syntax; ConfigError naming the flag, value and fix."""
    from ..builders.docker import parse_model_arg

    return parse_model_arg(value)


def split_model(value: str) -> tuple[str, str, str]:
    """``NAME:VERSION=URI`` -> (name, version, uri), the URI as typed (``models:/churn/3``,
    ``hf://acme/churn@v3``, a path ...); ConfigError naming the flag, value and fix."""
    from ..builders.docker import check_model_ref

    example = "e.g. --model churn:3=models:/churn/3 or --model churn:3=./outputs/model.pkl"
    left, sep, uri = value.partition("=")
    if not sep or not uri:
        raise ConfigError(f"--model '{value}': expected NAME:VERSION=URI ({example})")
    name, sep, version = left.rpartition(":")
    if not sep or not name or not version:
        raise ConfigError(f"--model '{value}': the part before '=' must be NAME:VERSION ({example})")
    check_model_ref(name, version, "--model", value)
    return name, version, uri


@dataclass
class FetchedRef:
    ref: ModelRef
    fetched: "FetchedModel"


def fetch_models(values: list[str], dest: Path, progress: Callable[[str], None]) -> list[FetchedRef]:
    """Each ``--model NAME:VERSION=URI`` fetched below ``dest`` (local paths are used in place: the
    flag is the caller's own, so any path on their machine is allowed)."""
    from ..fetch import fetch

    out = []
    for i, value in enumerate(values):
        name, version, uri = split_model(value)
        got = fetch(uri, Path(dest) / str(i), progress=progress)
        out.append(FetchedRef(ModelRef(name=name, version=version, path=got.path), got))
    return out


def model_dependencies(spec: PackageSpec, fetched: list["FetchedModel"], progress: Callable[[str], None]) -> None:
    """When ``spec`` names no requirements or conda file, use the model's own (MLflow's
    ``requirements.txt``, else its ``conda.yaml``; a Hub repo's ``requirements.txt``). No-code
    packaging of an MLflow model reads them itself; several models with their own files: none is picked."""
    if spec.requirements is not None or spec.conda is not None or spec.entry_script is None:
        return
    found = [f for f in fetched if f.requirements or f.conda]
    if len(found) != 1:
        if found:
            progress("several models carry their own requirements; pass --requirements to choose")
        return
    spec.requirements, spec.conda = found[0].requirements, found[0].conda
    progress(f"using the model's own {'requirements' if spec.requirements else 'conda environment'}: "
             f"{(spec.requirements or spec.conda).name}")
