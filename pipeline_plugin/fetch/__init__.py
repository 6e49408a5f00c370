"""Fetch a model version's files: a registry URI -> files on disk (used by ``package`` and the local provider).

One module per registry, each defining ``BACKEND`` with ``name``, ``prefixes`` (the URI beginnings it
takes), ``extra`` (the pip extra that brings its client) and ``fetch(uri, dest, ctx) -> Path``. SDKs
are imported only inside their backend module.

- ``mlflow``: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/RUN/PATH``, ``mlflow-artifacts:/...``
- ``sagemaker``: ``arn:aws:sagemaker:REGION:ACCOUNT:model-package/GROUP/VERSION``, ``s3://BUCKET/KEY``
  (a ``.tar.gz`` is unpacked; else an object or a prefix)
- ``azureml``: ``azureml://subscriptions/S/resourceGroups/RG/workspaces/W/models/NAME/versions/V``
- ``huggingface``: ``hf://REPO`` (``main``), ``hf://REPO@REVISION``
- ``wandb``: ``wandb-artifact://ENTITY/PROJECT/NAME:VERSION``, ``wandb-artifact://_id/ARTIFACT_ID``
- ``local``: a path, ``file://PATH``

**A sender never reads the host's disk.** ``allowed_roots=None`` means the caller typed the URI
(the CLI's ``--model``): any local path is fetched. A sequence (the local provider: the listener's
``fetch.allowed_roots`` and the rule's ``allowed_roots``, empty by default) means the URI came from
an event: a local path is fetched only when it lies below one of those folders after resolving
``..`` and symlinks, else ``ConfigError`` naming the URI, the roots and the fix.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

from ..errors import ConfigError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")

#: backend name -> module under pipeline_plugin.fetch; order = the order URIs are matched in
BACKENDS: dict[str, str] = {
    "mlflow": "mlflow",
    "sagemaker": "sagemaker",
    "azureml": "azureml",
    "huggingface": "huggingface",
    "wandb": "wandb",
    "local": "local",
}


@dataclass(frozen=True)
class FetchedModel:
    """What ``fetch`` brought: ``path`` (the model file or folder), the model's own dependency
    files when it has any (``requirements.txt``, else a conda ``conda.yaml``), and the backend."""

    uri: str
    path: Path
    backend: str
    requirements: Path | None = None
    conda: Path | None = None

    def to_dict(self) -> dict:
        return {"uri": self.uri, "path": str(self.path), "backend": self.backend,
                "requirements": str(self.requirements) if self.requirements else None,
                "conda": str(self.conda) if self.conda else None}


@dataclass(frozen=True)
class FetchContext:
    """What a backend may use besides the URI: the registry identity of the event (``tracking_uri``
    ...), the roots local paths must lie below (None: any), a progress callable."""

    registry: Mapping[str, str] = field(default_factory=dict)
    allowed_roots: tuple[Path, ...] | None = None
    progress: Callable[[str], None] = lambda _m: None


class Backend(Protocol):
    name: str
    prefixes: tuple[str, ...]
    extra: str | None

    def fetch(self, uri: str, dest: Path, ctx: FetchContext) -> Path: ...


def _backends() -> list[Backend]:
    found: list[Backend] = []
    names: set[str] = set()
    for name, module in BACKENDS.items():
        backend = importlib.import_module(f"{__name__}.{module}").BACKEND
        if backend.name in names:
            raise ConfigError(f"two fetch backends are named {backend.name!r}; each name must be unique")
        names.add(backend.name)
        found.append(backend)
    return found


def names_a_file(uri: str) -> bool:
    """A path or a ``file:`` URI (any case): a file on some machine's disk rather than in a registry."""
    return uri[:5].lower() == "file:" or not _SCHEME.match(uri)


def backend_for(uri: str) -> Backend:
    """The backend that takes ``uri``; ConfigError naming the supported forms otherwise."""
    backends = _backends()
    for backend in backends:
        if uri.startswith(backend.prefixes):
            return backend
    if not _SCHEME.match(uri):  # no scheme: a path
        return next(b for b in backends if b.name == "local")
    raise ConfigError(
        f"model URI {uri!r}: no fetch backend for this scheme; supported: models:/NAME/VERSION, models:/NAME@ALIAS, "
        "runs:/RUN/PATH, mlflow-artifacts:/... (MLflow), arn:aws:sagemaker:...:model-package/GROUP/VERSION and "
        "s3://BUCKET/KEY (SageMaker/S3), azureml://subscriptions/.../workspaces/W/models/NAME/versions/V (Azure ML), "
        "hf://REPO[@REVISION] (Hugging Face Hub), wandb-artifact://ENTITY/PROJECT/NAME:VERSION and "
        "wandb-artifact://_id/ID (W&B), a local path or file://PATH"
    )


def missing_client(backend: str, module: str, extra: str) -> ConfigError:
    return ConfigError(
        f"fetching a {backend} model needs the {module} package, which is not installed; "
        f"install it with: pip install 'pipeline-plugin[{extra}]'"
    )


def model_dependencies(path: Path) -> tuple[Path | None, Path | None]:
    """The model's own (requirements.txt, conda.yaml): requirements first, conda only without them."""
    if not path.is_dir():
        return None, None
    req = path / "requirements.txt"
    if req.is_file():
        return req, None
    for name in ("conda.yaml", "conda.yml", "environment.yml", "environment.yaml"):
        if (path / name).is_file():
            return None, path / name
    return None, None


def fetch(
    uri: str,
    dest: str | Path,
    *,
    registry: Mapping[str, str] | None = None,
    allowed_roots: Sequence[str | Path] | None = None,
    progress: Callable[[str], None] | None = None,
) -> FetchedModel:
    """Fetch the model at ``uri`` into the folder ``dest`` (created; it should be empty).

    ``registry``: the event's registry identity (``tracking_uri`` for MLflow). ``allowed_roots``:
    see the module doc (None: the caller typed the URI; a sequence: only local paths below these).
    Raises ``ConfigError`` (bad or refused URI, missing client), ``NotFoundError`` (no such
    version) or ``ServiceError`` (the registry failed or refused).
    """
    uri = str(uri).strip()
    if not uri:
        raise ConfigError("model URI is empty; give models:/NAME/VERSION, hf://REPO, s3://..., a path ...")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    roots = None if allowed_roots is None else tuple(Path(r).expanduser().resolve() for r in allowed_roots)
    ctx = FetchContext(registry=dict(registry or {}), allowed_roots=roots, progress=progress or (lambda _m: None))
    backend = backend_for(uri)
    path = backend.fetch(uri, dest, ctx)
    requirements, conda = model_dependencies(path)
    return FetchedModel(uri=uri, path=path, backend=backend.name, requirements=requirements, conda=conda)

