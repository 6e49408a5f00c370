"""Weights & Biases artifacts, through the ``wandb`` SDK's public API.

``wandb-artifact://ENTITY/PROJECT/NAME:VERSION`` (a version ``v3`` or an alias; what the ``wandb``
source records from ``${artifact_version_string}``; ``wandb-artifact:///...``, as stored by earlier
releases, is read the same) -> ``wandb.Api().artifact(...)``;
``wandb-artifact://_id/ID`` (``${artifact_version}``: immutable, also when an alias moved since)
-> the artifact with that id, as ``wandb`` itself resolves such a string (``run.use_artifact``).
Both are parsed by the SDK's own ``wandb.util.parse_artifact_string``.

Credentials and server are the SDK's: ``WANDB_API_KEY`` and ``WANDB_BASE_URL`` (a dedicated or
self-managed server; default ``https://api.wandb.ai``). **The server never comes from the URI:**
a ``wandb-artifact://https://HOST/...`` string names a host; it is fetched only when that host is
``WANDB_BASE_URL`` itself, else refused (the API key would be sent to whoever the event named).

The files land in ``dest/model``. W&B's client writes what its manifest lists without checking
the bytes it got, so every stored file (not a reference to another bucket) is then checked
against the manifest's size and MD5; a mismatch fails the fetch, naming the file. A reference to
a bucket or URL is checked by the SDK (the store's ETag against the manifest's digest; an ETag is
not always the bytes' MD5, so they are not hashed again); a reference to a file on this machine
(``file://``) is refused unless it lies below an allowed root (``check_references``).
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ConfigError, NotFoundError, ServiceError
from . import FetchContext, missing_client

DEFAULT_BASE_URL = "https://api.wandb.ai"
PREFIX = "wandb-artifact://"
#: how long one W&B API call may take (seconds)
TIMEOUT = 60
#: what the SDK's sign-in error says when it got no answer at all (not a refused key)
_UNREACHABLE = ("did not respond", "Failed to execute API request", "Connection refused", "timed out")


def _origin(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def parse(uri: str, parse_artifact_string, server: str) -> tuple[str, bool]:
    """(``ENTITY/PROJECT/NAME:VERSION`` or the artifact id, is_id); ConfigError for another form or
    for a server other than ``server`` (``WANDB_BASE_URL``)."""
    if uri.startswith(PREFIX + "/"):  # wandb-artifact:///E/P/N:V (earlier releases' events)
        uri = PREFIX + uri[len(PREFIX):].lstrip("/")
    try:
        name, base, is_id = parse_artifact_string(uri)
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"model URI {uri!r}: expected wandb-artifact://ENTITY/PROJECT/NAME:VERSION (a version "
                          f"such as v3, or an alias) or wandb-artifact://_id/ARTIFACT_ID ({exc})") from None
    if not name or (not is_id and ":" not in name.rsplit("/", 1)[-1]):
        raise ConfigError(f"model URI {uri!r}: name the version, e.g. wandb-artifact://acme/churn/model:v3 "
                          "(or an alias: ...:production)")
    if base and _origin(base) != _origin(server):
        raise ConfigError(
            f"model URI {uri!r} names the W&B server {base}, but this job's server is {server} "
            "(WANDB_BASE_URL): a model is fetched only from the configured server, which gets the API key; "
            f"set WANDB_BASE_URL={base} on the job if that server is yours"
        )
    return name, is_id


def _md5_b64(path: Path) -> str:
    h = hashlib.md5()  # noqa: S324 - W&B's manifest digest, an integrity check, not a signature
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            h.update(chunk)
    return base64.b64encode(h.digest()).decode()


def check_references(artifact, roots: tuple[Path, ...] | None) -> None:
    """A manifest entry may reference a file instead of holding it (``file:///...``): the SDK would
    copy it from the disk of the machine that fetches (a CI runner, the listener's host). That path
    is the registry's word, not the caller's: it is fetched only below an allowed root (the
    listener's ``fetch.allowed_roots``, the rule's ``allowed_roots``), like a local path in an event,
    and never when the caller named none (``package`` in a CI job)."""
    from .local import FIX, check_allowed, to_path

    for name, entry in artifact.manifest.entries.items():
        ref = getattr(entry, "ref", None) or ""
        if urlsplit(ref).scheme.lower() != "file":
            continue  # s3://, gs://, https://: the SDK compares the store's ETag with the manifest's digest
        where = f"W&B artifact {artifact.qualified_name}: {name} is a reference to {ref!r}, a file on the disk of " \
                "the machine that fetches it"
        if not roots:
            raise ConfigError(f"{where}; refused: log the file into the artifact (artifact.add_file) or reference a "
                              f"bucket instead; {FIX}")
        try:
            check_allowed(ref, to_path(ref), roots)
        except ConfigError as exc:
            raise ConfigError(f"{where}; {exc}") from None


def verify(artifact, root: Path) -> None:
    """Check each downloaded file against the manifest (size, MD5)."""
    for path, entry in artifact.manifest.entries.items():
        if getattr(entry, "ref", None):  # a reference (s3://, gs://, https://...): its digest is the store's ETag
            continue
        local = root / path
        if not local.is_file():
            raise ServiceError(f"W&B artifact {artifact.qualified_name}: {path} is in its manifest but was not downloaded")
        size = local.stat().st_size
        if entry.size is not None and size != entry.size:
            raise ServiceError(f"W&B artifact {artifact.qualified_name}: {path} has {size} bytes, its manifest says "
                               f"{entry.size}; the download is incomplete or altered, not deployed")
        got = _md5_b64(local)
        if got != entry.digest:
            raise ServiceError(f"W&B artifact {artifact.qualified_name}: {path} has MD5 {got}, its manifest says "
                               f"{entry.digest}; the download is altered, not deployed")


class WandbBackend:
    name = "wandb"
    prefixes = (PREFIX,)
    extra = "wandb"

    def fetch(self, uri: str, dest: Path, ctx: FetchContext) -> Path:
        try:
            import wandb
            from wandb import errors as wandb_errors
            from wandb.util import parse_artifact_string
        except ImportError:
            raise missing_client("W&B", "wandb", self.extra) from None
        server = os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
        name, is_id = parse(uri, parse_artifact_string, server)
        try:
            api = wandb.Api(timeout=TIMEOUT)
            artifact = api._artifact_from_id(name) if is_id else api.artifact(name)
        except (wandb_errors.AuthenticationError, wandb_errors.UsageError) as exc:
            if any(text in str(exc) for text in _UNREACHABLE):  # the sign-in could not reach the server
                raise ServiceError(f"W&B at {server} does not answer ({exc}); nothing was fetched for {uri!r}, "
                                   "try again, or check WANDB_BASE_URL") from exc
            raise ConfigError(f"could not sign in to W&B at {server} for {uri!r}: {exc}; set WANDB_API_KEY to a key "
                              "that may read the artifact (and WANDB_BASE_URL for a dedicated server)") from exc
        except Exception as exc:  # noqa: BLE001 - CommError and the like; "not found" is told apart below
            if "not found" in str(exc).lower() or "could not find" in str(exc).lower():
                raise NotFoundError(f"model URI {uri!r}: W&B at {server} has no such artifact, or the API key "
                                    f"may not read it ({exc})") from exc
            raise ServiceError(f"could not look up {uri!r} at W&B ({server}): {type(exc).__name__}: {exc}") from exc
        if artifact is None:
            raise NotFoundError(f"model URI {uri!r}: W&B at {server} has no artifact with this id, or the API key "
                                "may not read it")
        check_references(artifact, ctx.allowed_roots)
        model = dest / "model"
        ctx.progress(f"fetching W&B artifact {artifact.qualified_name} ({artifact.file_count} file(s)) from {server}")
        try:
            path = Path(artifact.download(root=str(model), skip_cache=True))
        except Exception as exc:  # noqa: BLE001 - HTTP, connection and file errors; the message says which
            raise ServiceError(f"could not download {uri!r} from W&B ({server}): {type(exc).__name__}: {exc}") from exc
        verify(artifact, path)
        return path


BACKEND = WandbBackend()
