"""The GitLab CI/CD catalog component `deploy-model` (templates/deploy-model.yml at the project
root, the catalog's layout): the jobs `render --provider gitlab` writes, configured by `spec:inputs`.

A project uses it with one include (what `init --provider gitlab --component` writes)::

    include:
      - component: $CI_SERVER_FQDN/pipeline-plugin/pipeline-plugin/deploy-model@0.1.0
        inputs:
          service: churn

``@0.1.0`` is a release tag of pipeline-plugin (the catalog's versions are its semantic-version
tags; ``@0.1`` or ``@~latest`` follow newer releases). The inputs carry a rule's ``pipeline:``
settings under the same names (``approval: true`` is ``production_when: manual``, ``install`` is
pinned to the release by default); the event reaches the pipeline as the variables
``pipeline-plugin dispatch`` passes, as for the rendered file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from .. import __version__, settings
from ..errors import ConfigError
from ..render import install_spec, template_settings

NAME = "deploy-model"
#: the project that publishes the component in the CI/CD catalog
PROJECT = "pipeline-plugin/pipeline-plugin"
#: rule settings that are inputs of the component under the same name
SAME_NAME = ("service", "image", "image_repository", "entry_script", "source_dir", "requirements", "conda", "base_image",
             "push", "target", "staging_port", "production_port", "config", "sample", "expect", "tolerance", "strategy")


def path() -> Path:
    """The component file (the checkout's templates/, else the copy in the wheel)."""
    return settings.data_dir("templates") / f"{NAME}.yml"


def spec() -> dict[str, dict[str, Any]]:
    """The component's ``spec:inputs`` (its header document)."""
    header = next(yaml.safe_load_all(path().read_text(encoding="utf-8")))
    return dict(header["spec"]["inputs"])


def defaults() -> dict[str, Any]:
    return {name: item["default"] for name, item in spec().items() if "default" in item}


def reference(version: str = __version__) -> str:
    """``$CI_SERVER_FQDN/pipeline-plugin/pipeline-plugin/deploy-model@VERSION``."""
    return f"$CI_SERVER_FQDN/{PROJECT}/{NAME}@{version}"


def inputs(pipeline: Mapping[str, Any], rule_name: str = "rule", source: str = "mlflow") -> dict[str, Any]:
    """The component inputs for a rule's ``pipeline:`` settings (checked as for rendering)."""
    opts = template_settings(pipeline, rule_name)
    out: dict[str, Any] = {key: opts[key] for key in SAME_NAME}
    out["install"] = install_spec(pipeline, opts["target"], source, rule_name)
    out["runner_tags"] = [t.strip() for t in opts["runner_tags"].split(",") if t.strip()]
    out["production_when"] = "manual" if opts["approval"] else "on_success"
    return out


def include(pipeline: Mapping[str, Any], rule_name: str = "rule", source: str = "mlflow",
            known: Mapping[str, Any] | None = None, ref: str | None = None) -> str:
    """The `.gitlab-ci.yml` that includes the component, naming only the inputs that differ from
    ``known`` (default: the component's own defaults) and always ``service``."""
    given = inputs(pipeline, rule_name, source)
    known = defaults() if known is None else known
    chosen = {k: v for k, v in given.items() if k == "service" or k not in known or known[k] != v}
    if not given["service"]:
        raise ConfigError(f"rule {rule_name!r}: pipeline.service is not set; the component's `service` input has no "
                          "default: name the service, e.g. the model name in lower case")
    return (
        f"# The deploy pipeline: pipeline-plugin's GitLab CI/CD catalog component ({NAME}); rule {rule_name!r}\n"
        "# dispatches it with the event as pipeline variables. Inputs: docs/ci.md#gitlab-cicd-component\n"
        + yaml.safe_dump({"include": [{"component": ref or reference(), "inputs": chosen}]}, sort_keys=False,
                         default_flow_style=False)
    )
