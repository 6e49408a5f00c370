"""The package stage: turn registered model version(s) and a scoring script into a container image.

``package(spec)`` is what the CLI (`pipeline-plugin package`), the local provider and the demo call.
The Docker work lives in :mod:`pipeline_plugin.builders.docker`; the data types (``ModelRef``,
``PackageSpec``, ``PackageResult``) in :mod:`pipeline_plugin.builders.spec`, re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..builders import docker as docker_builder
from ..builders.spec import ModelRef, PackageResult, PackageSpec

__all__ = ["ModelRef", "PackageResult", "PackageSpec", "package", "parse_model", "split_model", "fetch_models",
           "model_dependencies"]

if TYPE_CHECKING:
    from ..fetch import FetchedModel


def package(spec: PackageSpec, progress: Callable[[str], None] | None = None) -> PackageResult:
    """Build (or, with ``spec.generate_dockerfile``, write the context for) the model image.

    Raises ``ConfigError`` for bad input (names the field, value and fix) and ``ServiceError`` when
    Docker or the wheel download fails.
    """
    return docker_builder.build(spec, progress or (lambda _msg: None))


def parse_model(value: str) -> ModelRef:
    """Parse the ``--model NAME:VERSION=PATH`` syntax; ConfigError naming the flag, value and fix."""
    return docker_builder.parse_model_arg(value)


def split_model(value: str) -> tuple[str, str, str]:
    """``NAME:VERSION=URI`` -> (name, version, uri), the URI as typed (``models:/churn/3``,
    ``hf://acme/churn@v3``, a path ...); ConfigError naming the flag, value and fix."""
    return docker_builder.split_model_arg(
        value, "URI", "e.g. --model churn:3=models:/churn/3 or --model churn:3=./outputs/model.pkl")


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
