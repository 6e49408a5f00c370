"""Local paths and ``file://`` URIs.

Typed by the caller (``allowed_roots`` None): the file or folder is used where it is, nothing is
copied. From an event: it must lie below an allowed root once ``..`` and symlinks are resolved, and
it is copied into ``dest``; a symlink inside it that leads outside the roots is refused too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError, NotFoundError
from . import FetchContext

FIX = ("to allow it, list a folder that holds it under `fetch: allowed_roots:` in the listener's config "
       "(serve --config) or under `allowed_roots:` in the rule's pipeline section")


def to_path(uri: str) -> Path:
    if uri.startswith("file://"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"model URI {uri!r}: a file:// URI must name this machine (file:///path), not {parts.netloc!r}")
        return Path(unquote(parts.path))
    return Path(uri).expanduser()


def _below(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def check_allowed(uri: str, path: Path, roots: tuple[Path, ...]) -> Path:
    """The resolved path when it lies below one of ``roots``; ConfigError naming URI, roots and fix."""
    if not path.is_absolute():
        raise ConfigError(f"model URI {uri!r} from an event is a relative path; events must give absolute paths "
                          f"below an allowed root. {FIX}")
    resolved = path.resolve()
    if not roots:
        raise ConfigError(f"refused to fetch model URI {uri!r} from an event: local paths from events are refused "
                          f"unless allowed (no allowed roots are configured). {FIX}")
    if not _below(resolved, roots):
        shown = ", ".join(str(r) for r in roots)
        raise ConfigError(f"refused to fetch model URI {uri!r} from an event: {resolved} is not below an allowed root "
                          f"({shown}). {FIX}")
    return resolved


def _copy_checked(src: Path, dst: Path, roots: tuple[Path, ...], uri: str, seen: frozenset[Path] = frozenset()) -> None:
    """Copy ``src`` (a folder) to ``dst``; every symlink must resolve below ``roots`` (then its target is copied)."""
    seen = seen | {src.resolve()}
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in list(dirnames) + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                target = p.resolve()
                if not _below(target, roots):
                    raise ConfigError(f"refused to fetch model URI {uri!r} from an event: {p} links to {target}, "
                                      f"outside the allowed roots. {FIX}")
                if target.is_dir():
                    if target not in seen:  # a link to a folder being copied would never end
                        _copy_checked(target, dst / rel / name, roots, uri, seen)
                    continue
                shutil.copy2(target, dst / rel / name)
            elif name in filenames:
                shutil.copy2(p, dst / rel / name)


class LocalBackend:
    name = "local"
    prefixes = ("file://",)
    extra = None

    def fetch(self, uri: str, dest: Path, ctx: FetchContext) -> Path:
        path = to_path(uri)
        if ctx.allowed_roots is None:  # the caller's own flag: use it in place
            if not path.exists():
                raise ConfigError(f"model URI {uri!r}: no such file or folder; give the path of the model's file or "
                                  "folder, or a registry URI (models:/NAME/VERSION, hf://REPO ...)")
            return path
        resolved = check_allowed(uri, path, ctx.allowed_roots)
        if not resolved.exists():
            raise NotFoundError(f"model URI {uri!r}: no such file or folder ({resolved})")
        target = dest / resolved.name
        ctx.progress(f"copying {resolved}")
        if resolved.is_dir():
            _copy_checked(resolved, target, ctx.allowed_roots, uri)
        else:
            shutil.copy2(resolved, target)
        return target


BACKEND = LocalBackend()
