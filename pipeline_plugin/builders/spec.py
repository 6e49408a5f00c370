"""What the package stage asks a builder for, and what it answers: the small, stable data types
other modules code against (the stages call the builders, never the other way round)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import settings


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
