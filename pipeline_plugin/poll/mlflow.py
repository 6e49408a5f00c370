"""MLflow Model Registry through the MLflow client (``MlflowClient``): any MLflow 2.x/3.x server,
with a file or SQL store, and Databricks (``tracking_uri: databricks`` with ``DATABRICKS_HOST`` and
``DATABRICKS_TOKEN``, or ``databricks://PROFILE``).

* ``search_registered_models`` (``models: all``, the default) or the listed ``models``;
* ``search_model_versions("name='M'")``, paged: each ``READY`` version is a ``model_version.created``
  (a version still ``PENDING_REGISTRATION`` is announced by a later poll, once it is ready);
* with ``aliases: true`` (the default) each alias of a model is an ``alias.set`` for its version.

Events are those of the MLflow webhook source: ``registry`` = ``{tracking_uri}`` (the configured
value, so set ``sources.mlflow.tracking_uri`` to the same string: by default the poller takes it
from there, else from ``MLFLOW_TRACKING_URI``), ``artifact_uri`` = the version's ``source``,
``tags`` = its tags; with ``workspace`` (an MLflow server run with workspaces, whose webhook
payloads name one) ``registry`` holds it too. An HTTP tracking server that does not answer at all fails the poll at once
(retried with the runner's backoff) instead of after MLflow's own minutes of connection retries.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping

from ..errors import ConfigError, ServiceError
from ..events import ModelVersionEvent
from . import bool_option, delivery_id, names_option, observed_id, string_option

KEYS = ("tracking_uri", "registry_uri", "models", "aliases", "workspace")
PAGE = 200
PROBE_TIMEOUT = 10


def validate(options: Mapping[str, Any], where: str) -> None:
    string_option(options, "tracking_uri", where)
    string_option(options, "registry_uri", where)
    string_option(options, "workspace", where)
    names_option(options, "models", where)
    bool_option(options, "aliases", where, True)


def _ms(value: Any) -> str | None:
    try:
        return datetime.fromtimestamp(int(value) / 1000, timezone.utc).isoformat(timespec="milliseconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _quoted(name: str) -> str:
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


class MlflowPoller:
    name = "mlflow"
    event_source = "mlflow"

    def __init__(self, tracking_uri: str, registry_uri: str | None, models: list[str] | None, aliases: bool,
                 workspace: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.workspace = workspace
        self.registry_uri = registry_uri or tracking_uri
        self.models = models
        self.aliases = aliases

    def describe(self) -> str:
        return "MLflow at " + self.tracking_uri.split("@")[-1]  # never a user:password@ part

    def identity(self) -> str:
        # an MLflow server with workspaces holds one registry per workspace
        return self.describe() + (f" workspace {self.workspace}" if self.workspace else "")

    def _client(self):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            from ..fetch import missing_client

            raise missing_client("MLflow", "mlflow", "mlflow") from None
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def _reachable(self) -> None:
        """Fail fast when an HTTP tracking server does not answer at all: MLflow's client retries a
        refused connection for minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES), the runner's backoff is
        the retry here. Any HTTP answer (even 401/404 behind a proxy) counts as reachable."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return
        import requests

        try:
            requests.get(self.tracking_uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT)
        except requests.RequestException as exc:
            raise ServiceError(f"{self.describe()}: no answer ({type(exc).__name__})") from None

    def list_versions(self) -> Iterator[ModelVersionEvent]:
        self._reachable()
        client = self._client()
        try:
            yield from self._list(client)
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - MlflowException, connection errors: the message says which
            text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            raise ServiceError(f"{self.describe()}: could not list model versions: {text}") from exc

    def _registered(self, client) -> Iterator[Any]:
        if self.models is not None:
            for name in self.models:
                yield client.get_registered_model(name)
            return
        token = None
        while True:
            page = client.search_registered_models(max_results=PAGE, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _list(self, client) -> Iterator[ModelVersionEvent]:
        registry = {"tracking_uri": self.tracking_uri}
        if self.workspace:  # the "workspace" an MLflow server with workspaces puts in its webhook payloads
            registry["workspace"] = self.workspace
        for model in self._registered(client):
            token = None
            while True:
                page = client.search_model_versions(f"name={_quoted(model.name)}", max_results=PAGE, page_token=token)
                for mv in page:
                    if str(getattr(mv, "status", "READY") or "READY") != "READY":
                        continue
                    version = str(mv.version)
                    yield ModelVersionEvent(
                        source=self.event_source, kind="model_version.created", model=mv.name, version=version,
                        delivery_id=delivery_id(self.event_source, self.tracking_uri, mv.name, version),
                        time=_ms(mv.creation_timestamp), tags=dict(mv.tags or {}), artifact_uri=mv.source or None,
                        registry=registry, source_event_type="poll: search_model_versions",
                    )
                token = page.token
                if not token:
                    break
            if not self.aliases:
                continue
            for alias, version in sorted((getattr(model, "aliases", None) or {}).items()):
                yield ModelVersionEvent(
                    source=self.event_source, kind="alias.set", model=model.name, version=str(version), alias=alias,
                    delivery_id=observed_id(self.event_source, self.tracking_uri, model.name, f"@{alias}={version}"),
                    registry=registry, source_event_type="poll: registered model aliases",
                )


def build(options: Mapping[str, Any], where: str) -> MlflowPoller:
    tracking = string_option(options, "tracking_uri", where) or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking:
        raise ConfigError(f"{where}.tracking_uri: is required (or set MLFLOW_TRACKING_URI, or sources.mlflow."
                          "tracking_uri in the listener config): the MLflow server to poll, e.g. http://mlflow:5000")
    return MlflowPoller(tracking, string_option(options, "registry_uri", where) or os.environ.get("MLFLOW_REGISTRY_URI"),
                        names_option(options, "models", where), bool_option(options, "aliases", where, True),
                        string_option(options, "workspace", where))
