"""MLflow: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/RUN/PATH``, ``mlflow-artifacts:/...``
through ``mlflow.artifacts.download_artifacts``.

The server: the event's ``tracking_uri`` (the registry that announced the version) when given, else
MLflow's own ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` (``databricks`` and
``databricks://PROFILE`` work through the MLflow client with its usual ``DATABRICKS_HOST`` /
``DATABRICKS_TOKEN``). A downloaded folder is named ``model`` (as Azure ML names an MLflow model
folder: ``$AZUREML_MODEL_DIR/model/MLmodel``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..errors import ConfigError, NotFoundError, ServiceError
from . import FetchContext, missing_client


MODELS = re.compile(r"^models:/([^/@]+)(?:/(\d+)|@([^/]+))/?$")


def _resolve(uri: str, tracking: str, registry: str) -> str:
    """Where a registered version's files are, asked of *this* registry through a client of its own
    (``download_artifacts`` alone resolves ``models:/`` against the process-wide default server)."""
    m = MODELS.match(uri)
    if not m:
        return uri
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking, registry_uri=registry)
    name, version, alias = m.groups()
    if alias:
        version = client.get_model_version_by_alias(name, alias).version
    return client.get_model_version_download_uri(name, version)


class MlflowBackend:
    name = "mlflow"
    prefixes = ("models:/", "runs:/", "mlflow-artifacts:/")
    extra = "mlflow"

    def fetch(self, uri: str, dest: Path, ctx: FetchContext) -> Path:
        try:
            import mlflow.artifacts
            from mlflow.exceptions import MlflowException
        except ImportError:
            raise missing_client("MLflow", "mlflow", self.extra) from None
        tracking = ctx.registry.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking:
            raise ConfigError(
                f"model URI {uri!r}: no MLflow server named: the event has no tracking_uri (set sources.mlflow.tracking_uri "
                "in serve's config) and MLFLOW_TRACKING_URI is not set (e.g. http://mlflow:5000, or databricks with "
                "DATABRICKS_HOST and DATABRICKS_TOKEN)"
            )
        registry = ctx.registry.get("tracking_uri") or os.environ.get("MLFLOW_REGISTRY_URI") or tracking
        shown = tracking.split("@")[-1]  # never a user:password@ part
        ctx.progress(f"fetching {uri} from MLflow at {shown}")
        download = dest / "download"
        if download.exists():
            shutil.rmtree(download)
        download.mkdir(parents=True)
        try:
            location = _resolve(uri, tracking, registry)
            path = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=str(download), tracking_uri=tracking, registry_uri=registry))
        except MlflowException as exc:
            code = getattr(exc, "error_code", "")
            if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise NotFoundError(f"model URI {uri!r}: MLflow at {shown} has no such model version, alias or run "
                                    f"({exc.message}); check the name and version") from exc
            raise ServiceError(f"could not fetch {uri!r} from MLflow at {shown}: {exc.message}") from exc
        except Exception as exc:  # noqa: BLE001 - connection errors, artifact stores ... the message says which
            raise ServiceError(f"could not fetch {uri!r} from MLflow at {shown}: {type(exc).__name__}: {exc}") from exc
        if path.is_file():
            return path
        model = dest / "model"
        if model.exists():
            shutil.rmtree(model)
        path.rename(model)
        shutil.rmtree(download, ignore_errors=True)
        return model


BACKEND = MlflowBackend()
