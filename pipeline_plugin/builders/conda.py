"""Read a conda environment file (Azure ML's ``conda_file``) for an image that has no conda.

What can be honoured: the ``pip:`` section (installed from the wheelhouse like a requirements
file), a ``python`` pin (checked against the image's Python) and ``pip`` itself. Anything else
is a conda package, which pip cannot install: that is an error naming the packages and showing
the pip line to move each one to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import ConfigError

_CONDA_SPEC = re.compile(r"^\s*(?:[\w.-]+::)?(?P<name>[A-Za-z0-9_.-]+)\s*(?P<spec>.*?)\s*$")


@dataclass
class CondaEnv:
    pip: list[str]
    python: str | None  # the conda spec of python, e.g. "3.11" or ">=3.9,<3.12"


def parse(path: Path) -> CondaEnv:
    """Parse ``path``; ConfigError (naming --conda, the entry and the fix) for what cannot be honoured."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--conda {path}: cannot read the file ({exc.strerror}); pass an existing environment.yml") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--conda {path}: not valid YAML ({exc}); fix the file or pass --requirements instead") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--conda {path}: expected a mapping with a 'dependencies:' list (conda environment file)")
    deps = data.get("dependencies") or []
    if not isinstance(deps, list):
        raise ConfigError(f"--conda {path}: 'dependencies' must be a list, got {type(deps).__name__}")
    pip: list[str] = []
    python: str | None = None
    conda_only: list[str] = []
    for entry in deps:
        if isinstance(entry, dict):
            for key, value in entry.items():
                if key != "pip":
                    raise ConfigError(
                        f"--conda {path}: dependencies entry '{key}:' is not supported; only a 'pip:' list may be nested"
                    )
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"--conda {path}: 'pip:' must be a list of requirement strings")
                pip.extend(v.strip() for v in value if v.strip())
            continue
        if not isinstance(entry, str):
            raise ConfigError(f"--conda {path}: dependency {entry!r} is neither a string nor a 'pip:' list")
        match = _CONDA_SPEC.match(entry)
        if not match:
            raise ConfigError(f"--conda {path}: cannot read the dependency '{entry}'")
        name = match.group("name").lower()
        if name == "python":
            python = match.group("spec") or None
        elif name == "pip":
            continue
        else:
            conda_only.append(entry.strip())
    if conda_only:
        moves = "; ".join(f"'{c}' -> '{pip_line(c)}'" for c in conda_only)
        raise ConfigError(
            f"--conda {path}: conda packages cannot be installed in this image (it has pip, not conda): "
            f"{', '.join(conda_only)}. Move them to the 'pip:' section as PyPI requirements ({moves}), "
            "or pass --requirements FILE."
        )
    return CondaEnv(pip=pip, python=python)


def pip_line(conda_entry: str) -> str:
    """The pip requirement a conda spec most likely means: ``numpy=1.26`` -> ``numpy==1.26.*``."""
    match = _CONDA_SPEC.match(conda_entry)
    if not match:
        return conda_entry
    name, spec = match.group("name"), match.group("spec").replace(" ", "")
    spec = re.sub(r"^(=?[0-9][0-9A-Za-z.*]*)=[^=,<>!]+$", r"\1", spec)  # drop a build string: =1.26.4=py311h...
    if not spec:
        return name
    if re.match(r"^=?[0-9][0-9A-Za-z.*]*$", spec):  # "=1.26" or "1.26": conda's fuzzy match
        version = spec.lstrip("=")
        return f"{name}=={version}" if version.endswith("*") or version.count(".") >= 2 else f"{name}=={version}.*"
    return name + spec


def python_matches(conda_spec: str | None, version: str) -> bool:
    """Does the image's Python ``version`` (e.g. "3.11.2") satisfy conda's python spec?"""
    if not conda_spec:
        return True
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    pip_spec = pip_line("python " + conda_spec)[len("python"):]
    try:
        return SpecifierSet(pip_spec).contains(version)
    except InvalidSpecifier as exc:
        raise ConfigError(f"--conda: cannot read the python version spec '{conda_spec}'; write e.g. python=3.11") from exc
