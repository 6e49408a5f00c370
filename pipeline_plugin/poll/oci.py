"""An OCI / Docker registry through the Distribution API (``/v2/``): tags and their digests.

* ``GET /v2/_catalog`` (paged by ``Link``) when ``repositories: all`` (the default), else the listed
  ``repositories``;
* ``GET /v2/<repository>/tags/list`` (paged), then ``HEAD /v2/<repository>/manifests/<tag>`` with the
  manifest and index media types accepted: ``Docker-Content-Digest`` is the tag's digest.

Each tag is an ``image.pushed`` event as the docker-registry webhook source makes it: ``model`` =
the repository, ``version`` = the tag, ``digest``, ``image_uri`` = ``<host>/<repository>:<tag>``,
``registry`` = ``{host, repository}``. ``host`` is the name pipelines pull from: the ``host`` option,
by default ``sources.docker-registry.options.host`` of the listener config, else the registry URL's
``host:port``. A tag moved to another digest is a new event; the same tag and digest seen again is
the same one.

Credentials (optional): ``username`` with ``password_env`` (the name of the variable holding the
password or token), used as Basic auth, or exchanged at the registry's token service when it answers
``401`` with ``WWW-Authenticate: Bearer realm=...`` (Docker Hub, GHCR, Harbor ...).
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator, Mapping
from urllib.parse import quote, urljoin, urlsplit

from ..errors import ConfigError, ServiceError
from ..events import ModelVersionEvent
from ..sources.docker_registry import MANIFEST_MEDIA_TYPES
from . import names_option, observed_id, string_option

KEYS = ("registry", "repositories", "host", "username", "password_env")
PAGE = 100
ACCEPT = ", ".join(sorted(MANIFEST_MEDIA_TYPES))
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


def validate(options: Mapping[str, Any], where: str) -> None:
    _registry_url(options, where)
    names_option(options, "repositories", where)
    string_option(options, "host", where)
    string_option(options, "username", where)
    string_option(options, "password_env", where)


def _registry_url(options: Mapping[str, Any], where: str) -> str:
    url = string_option(options, "registry", where, required=True,
                        hint=": the registry's base URL, e.g. http://registry:5000 or https://ghcr.io")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where}.registry: {url!r} is not an http(s) URL; give e.g. http://registry:5000")
    return url.rstrip("/")


class OciPoller:
    name = "oci"
    event_source = "docker-registry"

    def __init__(self, registry: str, repositories: list[str] | None, host: str | None,
                 username: str | None, password: str | None) -> None:
        import requests

        self.registry = registry
        self.repositories = repositories
        self.host = host or urlsplit(registry).netloc.rsplit("@", 1)[-1]
        self.session = requests.Session()
        self.auth = (username, password) if username and password is not None else None
        self._bearer: dict[str, str] = {}  # scope -> token

    def describe(self) -> str:
        parts = urlsplit(self.registry)
        return f"registry {parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"  # never user:password@

    def identity(self) -> str:
        return self.describe()

    @property
    def models(self) -> list[str] | None:
        return self.repositories

    # ---- HTTP with the registry's auth dance ---------------------------------------------------------
    def _request(self, method: str, path: str, scope: str, headers: dict[str, str] | None = None):
        import requests

        url = path if path.startswith("http") else self.registry + path
        headers = dict(headers or {})
        for attempt in range(2):
            if scope in self._bearer:
                headers["Authorization"] = f"Bearer {self._bearer[scope]}"
            try:
                resp = self.session.request(method, url, headers=headers, timeout=30,
                                            auth=None if "Authorization" in headers else self.auth)
            except requests.RequestException as exc:
                raise ServiceError(f"{self.describe()}: no answer for {method} {urlsplit(url).path} "
                                   f"({type(exc).__name__})") from exc
            challenge = resp.headers.get("WWW-Authenticate", "")
            if resp.status_code == 401 and attempt == 0 and challenge.lower().startswith("bearer"):
                self._bearer[scope] = self._token(challenge, scope)
                continue
            break
        if resp.status_code >= 400:
            hint = {401: " (set username and password_env)", 403: " (the credentials may not read it)"}.get(
                resp.status_code, "")
            raise ServiceError(f"{self.describe()}: {method} {urlsplit(url).path} answered {resp.status_code}{hint}")
        return resp

    def _token(self, challenge: str, scope: str) -> str:
        import requests

        fields = dict(_CHALLENGE.findall(challenge))
        realm = fields.get("realm")
        if not realm:
            raise ServiceError(f"{self.describe()}: a Bearer challenge without realm: {challenge[:200]}")
        params = {"service": fields.get("service", ""), "scope": scope}
        try:
            resp = requests.get(realm, params=params, auth=self.auth, timeout=30)
        except requests.RequestException as exc:
            raise ServiceError(f"{self.describe()}: token service {urlsplit(realm).netloc} did not answer "
                               f"({type(exc).__name__})") from exc
        if resp.status_code >= 400:
            raise ServiceError(f"{self.describe()}: token service {urlsplit(realm).netloc} answered "
                               f"{resp.status_code} for scope {scope}")
        body = resp.json()
        return str(body.get("token") or body.get("access_token") or "")

    def _paged(self, path: str, key: str, scope: str) -> Iterator[str]:
        url: str | None = f"{path}?n={PAGE}"
        while url:
            resp = self._request("GET", url, scope)
            yield from (resp.json() or {}).get(key) or []
            link = resp.headers.get("Link", "")
            match = re.match(r"\s*<([^>]+)>", link)
            url = urljoin(self.registry + "/", match.group(1)) if match else None

    # ---- listing ---------------------------------------------------------------------------------------
    def list_versions(self) -> Iterator[ModelVersionEvent]:
        repositories = self.repositories
        if repositories is None:
            repositories = list(self._paged("/v2/_catalog", "repositories", "registry:catalog:*"))
        for repository in repositories:
            scope = f"repository:{repository}:pull"
            tags = sorted(set(self._paged(f"/v2/{quote(repository)}/tags/list", "tags", scope)))
            for tag in tags:
                resp = self._request("HEAD", f"/v2/{quote(repository)}/manifests/{quote(tag, safe='')}", scope,
                                     {"Accept": ACCEPT})
                digest = resp.headers.get("Docker-Content-Digest")
                if not digest:
                    raise ServiceError(f"{self.describe()}: HEAD of {repository}:{tag} gave no Docker-Content-Digest")
                yield ModelVersionEvent(
                    source=self.event_source, kind="image.pushed", model=repository, version=tag,
                    delivery_id=observed_id(self.event_source, self.host, repository, f"{tag}@{digest}"),
                    image_uri=f"{self.host}/{repository}:{tag}", digest=digest,
                    registry={"repository": repository, "host": self.host},
                    source_event_type=f"poll: tags/list {resp.headers.get('Content-Type', '')}".strip(),
                )


def build(options: Mapping[str, Any], where: str) -> OciPoller:
    username = string_option(options, "username", where)
    password_env = string_option(options, "password_env", where)
    password = None
    if username:
        if not password_env:
            raise ConfigError(f"{where}.password_env: is required with username: the name of the environment "
                              "variable holding the password or token")
        password = os.environ.get(password_env)
        if password is None:
            raise ConfigError(f"{where}.password_env: environment variable {password_env} is not set")
    return OciPoller(_registry_url(options, where), names_option(options, "repositories", where),
                     string_option(options, "host", where), username, password)
