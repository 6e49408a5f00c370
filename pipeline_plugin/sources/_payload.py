"""Careful readers of untrusted JSON: every failure is a ``PayloadError`` whose ``field`` is the
JSON path of the offending value (``events[0].target.repository``, ``[0].data.modelName``).

Parsers use these instead of indexing dicts directly so that a wrong type or a missing key can
never surface as ``KeyError``/``TypeError`` (a 500) in the server.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

from ..errors import PayloadError

_SCALARS = (str, int, float, bool)


def join(path: str, key: str | int) -> str:
    """``join("events", 0) -> "events[0]"``; ``join("events[0]", "target") -> "events[0].target"``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def need_object(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise PayloadError(f"{path or 'the body'} must be a JSON object, got {_kind(value)}", field=path or "(body)")
    return value


def need_list(value: Any, path: str) -> list:
    if not isinstance(value, list):
        raise PayloadError(f"{path or 'the body'} must be a JSON array, got {_kind(value)}", field=path or "(body)")
    return value


def ci_key(obj: Mapping[str, Any], *names: str) -> str | None:
    """The key of ``obj`` that equals one of ``names`` ignoring case (Azure's camelCase/PascalCase)."""
    wanted = {n.lower() for n in names}
    for key in obj:
        if isinstance(key, str) and key.lower() in wanted:
            return key
    return None


def get(obj: Mapping[str, Any], path: str, *names: str, ci: bool = False) -> tuple[str, Any]:
    """``(json path, value)`` of the first of ``names`` present (``None`` value if none is)."""
    for name in names:
        key = ci_key(obj, name) if ci else (name if name in obj else None)
        if key is not None:
            return join(path, key), obj[key]
    return join(path, names[0]), None


def string(obj: Mapping[str, Any], path: str, *names: str, required: bool = True, ci: bool = False) -> str | None:
    """A non-empty string field. Numbers are not silently accepted where a name is expected."""
    field, value = get(obj, path, *names, ci=ci)
    if value is None or value == "":
        if required:
            raise PayloadError(f"{field} is missing; it must be a non-empty string", field=field)
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{field} must be a string, got {_kind(value)}", field=field)
    return value


def version(obj: Mapping[str, Any], path: str, *names: str, required: bool = True, ci: bool = False) -> str | None:
    """A version: a non-empty string or an integer (``7`` and ``"7"`` both give ``"7"``)."""
    field, value = get(obj, path, *names, ci=ci)
    if value is None or value == "":
        if required:
            raise PayloadError(f"{field} is missing; it must be a version string or integer", field=field)
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PayloadError(f"{field} must be a version string or integer, got {_kind(value)}", field=field)
    return str(value)


def obj_field(obj: Mapping[str, Any], path: str, *names: str, required: bool = False, ci: bool = False) -> dict:
    field, value = get(obj, path, *names, ci=ci)
    if value is None:
        if required:
            raise PayloadError(f"{field} is missing; it must be a JSON object", field=field)
        return {}
    return need_object(value, field)


def list_field(obj: Mapping[str, Any], path: str, *names: str, required: bool = False, ci: bool = False) -> list:
    field, value = get(obj, path, *names, ci=ci)
    if value is None:
        if required:
            raise PayloadError(f"{field} is missing; it must be a JSON array", field=field)
        return []
    return need_list(value, field)


def string_map(obj: Mapping[str, Any], path: str, *names: str, ci: bool = False) -> dict[str, str]:
    """A ``{name: scalar}`` object (tags, properties); values become strings, ``null`` becomes ``""``."""
    field, value = get(obj, path, *names, ci=ci)
    if value is None:
        return {}
    need_object(value, field)
    out: dict[str, str] = {}
    for key, item in value.items():
        if item is None:
            out[key] = ""
        elif isinstance(item, bool):
            out[key] = "true" if item else "false"
        elif isinstance(item, _SCALARS):
            out[key] = str(item)
        else:
            raise PayloadError(f"{join(field, key)} must be a string, got {_kind(item)}", field=join(field, key))
    return out


def body_digest(body: bytes) -> str:
    """A stable delivery id for registries that send none: the same bytes give the same id."""
    return "sha256:" + hashlib.sha256(body).hexdigest()
