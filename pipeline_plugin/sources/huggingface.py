"""Hugging Face Hub webhooks (``POST /webhooks/huggingface``).

Authentication: scheme ``huggingface-secret`` (the Hub sends the webhook's secret verbatim in
``X-Webhook-Secret``).

Only model repositories' content updates announce versions (``event.scope == "repo.content"``,
``event.action == "update"``, ``repo.type == "model"``). Each entry of ``updatedRefs`` maps to:

======================================  ==========================  ====================
ref change                              kind                        version
======================================  ==========================  ====================
``refs/tags/<t>`` created or moved      ``model_version.created``   ``<t>``
``refs/tags/<t>`` deleted (newSha null) ``model_version.deleted``   ``<t>``
``refs/heads/<b>`` new commit           ``model_version.created``   the new commit sha
``refs/heads/<b>`` deleted, other refs  none                        -
(``refs/pr/*``, ``refs/convert/*``)
======================================  ==========================  ====================

A push that commits and tags at once gives two events (the sha and the tag); a rule picks one with
``tags: {"hf.ref": "refs/tags/*"}`` or a version condition. Payloads without ``updatedRefs`` (older
Hub versions) give one ``model_version.created`` for ``repo.headSha``. Repository creation or
deletion, settings (``repo.config``), discussions, datasets and Spaces give no event.

Fields: ``model`` = ``repo.name``; ``registry`` = ``repository`` (``repo.name``) and ``host`` (from
``repo.url.web``); ``artifact_uri`` = ``hf://<repo>@<commit sha>`` (immutable);
``tags`` = ``repo.tags`` (``"license:mit"`` -> ``license: mit``, ``"sklearn"`` -> ``sklearn: ""``) plus
``hf.ref`` and ``hf.sha``; ``delivery_id`` = ``Webhook-Id`` header (stable across retries; a digest
of the body when absent) + ``#`` + ref.
"""

from __future__ import annotations

from datetime import datetime, timezone

from urllib.parse import urlsplit

from . import BaseSource, Request, _payload as P
from ..errors import PayloadError
from ..events import ModelVersionEvent

TAG_PREFIX = "refs/tags/"
BRANCH_PREFIX = "refs/heads/"


def _repo_tags(repo: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for index, item in enumerate(P.list_field(repo, "repo", "tags")):
        if not isinstance(item, str):
            raise PayloadError(f"repo.tags[{index}] must be a string", field=f"repo.tags[{index}]")
        key, _, value = item.partition(":")
        out[key] = value
    return out


class HuggingFaceSource(BaseSource):
    name = "huggingface"
    auth_scheme = "huggingface-secret"

    def parse(self, request: Request) -> list[ModelVersionEvent]:
        body = P.need_object(request.json(), "")
        event = P.obj_field(body, "", "event", required=True)
        scope = P.string(event, "event", "scope")
        action = P.string(event, "event", "action")
        repo = P.obj_field(body, "", "repo", required=True)
        repo_type = P.string(repo, "repo", "type")
        name = P.string(repo, "repo", "name")
        if (scope, action, repo_type) != ("repo.content", "update", "model"):
            return []

        url = P.obj_field(repo, "repo", "url")
        web = P.string(url, "repo.url", "web", required=False)
        host = urlsplit(web).netloc if web else ""
        registry = {"repository": name, "host": host or "huggingface.co"}
        base_tags = _repo_tags(repo)
        delivery = request.headers.get("Webhook-Id") or P.body_digest(request.body)

        changes: list[tuple[str, str, str, str]] = []  # (kind, version, ref, sha)
        refs_field, refs = P.get(body, "", "updatedRefs")
        if refs is None:
            sha = P.string(repo, "repo", "headSha")
            changes.append(("model_version.created", sha, "", sha))
        else:
            for index, raw in enumerate(P.need_list(refs, refs_field)):
                path = f"{refs_field}[{index}]"
                item = P.need_object(raw, path)
                ref = P.string(item, path, "ref")
                new_sha = P.string(item, path, "newSha", required=False)
                P.string(item, path, "oldSha", required=False)  # type check only
                if ref.startswith(TAG_PREFIX) and len(ref) > len(TAG_PREFIX):
                    tag = ref[len(TAG_PREFIX):]
                    if new_sha:
                        changes.append(("model_version.created", tag, ref, new_sha))
                    else:
                        changes.append(("model_version.deleted", tag, ref, ""))
                elif ref.startswith(BRANCH_PREFIX) and new_sha:
                    changes.append(("model_version.created", new_sha, ref, new_sha))

        events = []
        for kind, version, ref, sha in changes:
            tags = dict(base_tags)
            tags["hf.ref"] = ref
            tags["hf.sha"] = sha
            events.append(
                ModelVersionEvent(
                    source=self.name,
                    kind=kind,
                    model=name,
                    version=version,
                    delivery_id=f"{delivery}#{ref or 'head'}",
                    tags=tags,
                    artifact_uri=f"hf://{name}@{sha}" if sha else None,
                    registry=registry,
                    source_event_type=f"{scope}.{action}",
                    # the Hub's payload has no timestamp: the time it reached the listener
                    time=datetime.fromtimestamp(request.now, timezone.utc).isoformat(timespec="seconds"),
                )
            )
        return events


SOURCE = HuggingFaceSource()
