"""Hugging Face Hub model repositories through ``huggingface_hub.HfApi``: refs and commits.

* ``list_repo_refs`` (``GET /api/models/REPO/refs``): each tag is a ``model_version.created`` whose
  version is the tag; each branch's head commit is one whose version is the commit sha;
* with ``commits: N`` (default 1: the heads only), the newest N commits of each branch
  (``list_repo_commits``), so that several pushes made while the poller was away are each announced,
  as the webhook announces each push's head.

Events are those of the Hub webhook source: ``registry`` = ``{repository, host}`` (``host`` from
``endpoint``, default ``HF_ENDPOINT`` or ``https://huggingface.co``), ``artifact_uri`` =
``hf://REPO@SHA``, ``tags`` ``hf.ref`` and ``hf.sha``. ``HF_TOKEN`` is read by ``huggingface_hub``.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

from ..errors import ConfigError, ServiceError
from ..events import ModelVersionEvent
from . import delivery_id, names_option, string_option

KEYS = ("repositories", "endpoint", "branches", "commits")
DEFAULT_ENDPOINT = "https://huggingface.co"


def validate(options: Mapping[str, Any], where: str) -> None:
    names_option(options, "repositories", where, required=True)
    if options.get("repositories") == "all":
        raise ConfigError(f"{where}.repositories: list the model repositories to poll (OWNER/NAME); the Hub "
                          "has no 'all'")
    string_option(options, "endpoint", where)
    names_option(options, "branches", where)
    commits = options.get("commits", 1)
    if isinstance(commits, bool) or not isinstance(commits, int) or commits < 1:
        raise ConfigError(f"{where}.commits: must be a whole number of commits per branch, 1 or more, got {commits!r}")


class HuggingFacePoller:
    name = "huggingface"
    event_source = "huggingface"

    def __init__(self, repositories: list[str], endpoint: str, branches: list[str] | None, commits: int) -> None:
        self.repositories = repositories
        self.endpoint = endpoint.rstrip("/")
        self.host = urlsplit(self.endpoint).netloc or "huggingface.co"
        self.branches = branches
        self.commits = commits

    def describe(self) -> str:
        return f"the Hub at {self.endpoint}"

    def identity(self) -> str:
        return self.describe()

    @property
    def models(self) -> list[str] | None:
        return self.repositories

    def _api(self):
        try:
            from huggingface_hub import HfApi
        except ImportError:
            from ..fetch import missing_client

            raise missing_client("Hugging Face Hub", "huggingface_hub", "huggingface") from None
        return HfApi(endpoint=self.endpoint)

    def list_versions(self) -> Iterator[ModelVersionEvent]:
        api = self._api()
        for repo in self.repositories:
            try:
                events = list(self._repo(api, repo))
            except ServiceError:
                raise
            except Exception as exc:  # noqa: BLE001 - HTTP and connection errors; the message says which
                raise ServiceError(f"{self.describe()}: could not list the refs of {repo}: "
                                   f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
            yield from events

    def _event(self, repo: str, version: str, ref: str, sha: str, time: str | None = None) -> ModelVersionEvent:
        return ModelVersionEvent(
            source=self.event_source, kind="model_version.created", model=repo, version=version,
            delivery_id=delivery_id(self.event_source, self.host, repo, ref, version),
            tags={"hf.ref": ref, "hf.sha": sha}, artifact_uri=f"hf://{repo}@{sha}",
            registry={"repository": repo, "host": self.host}, time=time, source_event_type="poll: refs",
        )

    def _repo(self, api, repo: str) -> Iterator[ModelVersionEvent]:
        refs = api.list_repo_refs(repo, repo_type="model")
        for branch in refs.branches:
            if self.branches is not None and branch.name not in self.branches:
                continue
            ref = f"refs/heads/{branch.name}"
            if self.commits == 1:
                yield self._event(repo, branch.target_commit, ref, branch.target_commit)
                continue
            commits = api.list_repo_commits(repo, repo_type="model", revision=branch.name)[: self.commits]
            for commit in reversed(commits):  # oldest first: the order they were pushed
                created = getattr(commit, "created_at", None)
                yield self._event(repo, commit.commit_id, ref, commit.commit_id,
                                  created.isoformat() if hasattr(created, "isoformat") else None)
        for tag in refs.tags:
            yield self._event(repo, tag.name, f"refs/tags/{tag.name}", tag.target_commit)


def build(options: Mapping[str, Any], where: str) -> HuggingFacePoller:
    validate(options, where)
    endpoint = string_option(options, "endpoint", where) or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    return HuggingFacePoller(names_option(options, "repositories", where, required=True), endpoint,
                             names_option(options, "branches", where), int(options.get("commits", 1)))
