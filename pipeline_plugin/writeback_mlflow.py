"""Write-back to an MLflow model registry through ``MlflowClient(tracking_uri)``.

After a production check passes, alias ``production`` moves to the new version and
``previous-production`` to the one it replaced; version tags (prefix ``pipeline_plugin.``) record
status, scoring URI, image and run URL. A rollback moves the aliases back. MLflow stages are
deprecated since 2.9, so none are set. The listener ignores the alias and tag events these calls
cause (``writeback.is_own_writeback``).
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError, ServiceError
from .writeback import ALIAS_PREVIOUS_PRODUCTION, ALIAS_PRODUCTION, VersionTagWriter, WritebackInfo


def tracking_uri(info: WritebackInfo) -> str:
    uri = dict(info.registry).get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError(
            "cannot write back to MLflow: the event names no tracking_uri and MLFLOW_TRACKING_URI is not set; "
            "set MLFLOW_TRACKING_URI to the registry's URL"
        )
    return uri


def _client(info: WritebackInfo) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(info), registry_uri=tracking_uri(info))


def _call(what: str, fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - MLflow raises MlflowException and requests errors
        raise ServiceError(f"MLflow write-back failed to {what}: {exc}") from exc


def _set_alias(client: Any, model: str, alias: str, version: str) -> str:
    _call(f"set alias {alias}", client.set_registered_model_alias, model, alias, version)
    return version


def _unnamed(info: WritebackInfo) -> dict[str, Any] | None:
    """A delivery from an MLflow server the listener was not told about (no ``tracking_uri`` in its
    config, no ``MLFLOW_TRACKING_URI``): nothing to write to, said plainly."""
    if dict(info.registry).get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return {"skipped": "the delivery named no MLflow server: set sources.mlflow.tracking_uri in the listener's "
                       "--config (or MLFLOW_TRACKING_URI) to write aliases and tags back"}


class _MlflowWriter(VersionTagWriter):
    """Version tags as every backend writes them, plus the aliases MLflow users read."""

    name = "mlflow"

    def target(self, info: WritebackInfo) -> dict[str, Any]:
        return {"tracking_uri": tracking_uri(info)}

    def set_tags(self, info: WritebackInfo, model: str, version: str, tags: dict[str, str]) -> dict[str, str]:
        client = _client(info)
        for k, v in tags.items():
            _call(f"tag {model} v{version}", client.set_model_version_tag, model, version, k, v)
        return tags

    def production(self, model: str, version: str, previous_version: str | None, info: WritebackInfo) -> dict[str, Any]:
        if (skip := _unnamed(info)) is not None:
            return skip
        written = {**super().production(model, version, previous_version, info), "aliases": {}}
        client = _client(info)
        written["aliases"][ALIAS_PRODUCTION] = _set_alias(client, model, ALIAS_PRODUCTION, version)
        if previous_version and previous_version != version:
            written["aliases"][ALIAS_PREVIOUS_PRODUCTION] = _set_alias(
                client, model, ALIAS_PREVIOUS_PRODUCTION, previous_version
            )
        return written

    def rollback(
        self, model: str, restored_version: str, from_version: str | None, before_restored: str | None, info: WritebackInfo
    ) -> dict[str, Any]:
        if (skip := _unnamed(info)) is not None:
            return skip
        written = {**super().rollback(model, restored_version, from_version, before_restored, info), "aliases": {}}
        client = _client(info)
        written["aliases"][ALIAS_PRODUCTION] = _set_alias(client, model, ALIAS_PRODUCTION, restored_version)
        if before_restored and before_restored != restored_version:
            written["aliases"][ALIAS_PREVIOUS_PRODUCTION] = _set_alias(
                client, model, ALIAS_PREVIOUS_PRODUCTION, before_restored
            )
        else:
            try:
                client.delete_registered_model_alias(model, ALIAS_PREVIOUS_PRODUCTION)
            except Exception:  # noqa: BLE001 - absent alias: nothing to move back
                pass
            written["aliases"][ALIAS_PREVIOUS_PRODUCTION] = None
        return written

    def status(self, model: str, version: str, status: str, info: WritebackInfo) -> dict[str, Any]:
        if (skip := _unnamed(info)) is not None:
            return skip
        return super().status(model, version, status, info)


WRITER = _MlflowWriter()
