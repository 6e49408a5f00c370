"""Hugging Face Hub model repositories: ``hf://REPO`` (branch ``main``) and ``hf://REPO@REVISION``
(a branch, tag or commit sha), through ``huggingface_hub.snapshot_download``.

``HF_ENDPOINT`` (another Hub, e.g. a mirror or a private Hub) and ``HF_TOKEN`` are read by
``huggingface_hub`` itself; the files land in ``dest/model`` (not the shared cache).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError, NotFoundError, ServiceError
from . import FetchContext, missing_client

REPO = re.compile(r"^hf://(?:models/)?([A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)?)(?:@([^@\s]+))?/?$")


def parse(uri: str) -> tuple[str, str]:
    m = REPO.match(uri)
    if not m:
        raise ConfigError(f"model URI {uri!r}: expected hf://OWNER/REPO or hf://OWNER/REPO@REVISION "
                          "(a branch, tag or commit), e.g. hf://acme/churn@v3")
    return m.group(1), m.group(2) or "main"


class HuggingFaceBackend:
    name = "huggingface"
    prefixes = ("hf://",)
    extra = "huggingface"

    def fetch(self, uri: str, dest: Path, ctx: FetchContext) -> Path:
        repo, revision = parse(uri)
        try:
            from huggingface_hub import snapshot_download
            from huggingface_hub import errors as hf_errors
        except ImportError:
            raise missing_client("Hugging Face Hub", "huggingface_hub", self.extra) from None
        ctx.progress(f"fetching {repo}@{revision} from the Hugging Face Hub")
        model = dest / "model"
        try:
            # HF_ENDPOINT as it is now: huggingface_hub reads it once, when it is first imported
            path = snapshot_download(repo_id=repo, revision=revision, local_dir=str(model),
                                     endpoint=os.environ.get("HF_ENDPOINT") or None)
        except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError) as exc:
            raise NotFoundError(f"model URI {uri!r}: the Hub has no such repository or revision, or HF_TOKEN may not "
                                f"read it ({type(exc).__name__})") from exc
        except Exception as exc:  # noqa: BLE001 - HTTP, connection and file errors; the message says which
            raise ServiceError(f"could not fetch {uri!r} from the Hugging Face Hub: {type(exc).__name__}: {exc}") from exc
        path = Path(path)
        cache = path / ".cache"  # huggingface_hub's bookkeeping beside the files, not part of the model
        if cache.is_dir():
            import shutil

            shutil.rmtree(cache)
        return path


BACKEND = HuggingFaceBackend()
