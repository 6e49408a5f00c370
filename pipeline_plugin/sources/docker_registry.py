"""Docker registry (CNCF distribution, Debian's ``docker-registry``) notifications
(``POST /webhooks/docker-registry``).

The registry POSTs an envelope ``{"events": [...]}`` (``application/vnd.docker.distribution.events.v1+json``).
Only a ``push`` whose ``target.mediaType`` is an image manifest or index
(``MANIFEST_MEDIA_TYPES``) is a new image: it maps to ``image.pushed``. ``pull``, ``delete``,
``mount`` and blob (layer/config) pushes give no event.

Fields: ``model`` = ``target.repository``; ``version`` = ``target.tag``, or the manifest digest for
a push by digest (e.g. the per-platform manifests of a multi-arch push); ``digest`` =
``target.digest``; ``image_uri`` = ``<host>/<repository>:<tag>`` (``@<digest>`` without a tag)
where ``host`` is ``request.options["host"]`` (server config: the name pipelines pull from) or else
``request.host`` of the event (the address the pushing client used); ``registry`` = ``host`` and
``repository``; ``time`` = ``timestamp``; ``delivery_id`` = the event ``id`` (kept across the
registry's retries).

Authentication: scheme ``token``. Set the endpoint's header in the registry config::

    notifications:
      endpoints:
        - name: pipeline-plugin
          url: http://listener:8080/webhooks/docker-registry
          headers: {Authorization: [Bearer <token>]}
"""

from __future__ import annotations

from . import BaseSource, Request, _payload as P
from ..events import ModelVersionEvent

MANIFEST_MEDIA_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    }
)


class DockerRegistrySource(BaseSource):
    name = "docker-registry"
    auth_scheme = "token"

    def parse(self, request: Request) -> list[ModelVersionEvent]:
        body = P.need_object(request.json(), "")
        items = P.list_field(body, "", "events", required=True)
        configured_host = (request.options or {}).get("host")
        out: list[ModelVersionEvent] = []
        for index, raw in enumerate(items):
            path = f"events[{index}]"
            item = P.need_object(raw, path)
            action = P.string(item, path, "action")
            target = P.obj_field(item, path, "target", required=True)
            tpath = f"{path}.target"
            media_type = P.string(target, tpath, "mediaType", required=False) or ""
            if action != "push" or media_type.split(";")[0].strip() not in MANIFEST_MEDIA_TYPES:
                continue
            repository = P.string(target, tpath, "repository")
            digest = P.string(target, tpath, "digest")
            tag = P.string(target, tpath, "tag", required=False)
            event_id = P.string(item, path, "id")
            req = P.obj_field(item, path, "request")
            src = P.obj_field(item, path, "source")
            host = (
                configured_host
                if isinstance(configured_host, str) and configured_host
                else P.string(req, f"{path}.request", "host", required=False)
                or P.string(src, f"{path}.source", "addr", required=False)
                or ""
            )
            prefix = f"{host}/{repository}" if host else repository
            image_uri = f"{prefix}:{tag}" if tag else f"{prefix}@{digest}"
            registry = {"repository": repository}
            if host:
                registry["host"] = host
            out.append(
                ModelVersionEvent(
                    source=self.name,
                    kind="image.pushed",
                    model=repository,
                    version=tag or digest,
                    delivery_id=event_id,
                    time=P.string(item, path, "timestamp", required=False),
                    image_uri=image_uri,
                    digest=digest,
                    registry=registry,
                    source_event_type=f"{action} {media_type}",
                )
            )
        return out


SOURCE = DockerRegistrySource()
