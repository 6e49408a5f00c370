"""Azure DevOps: run a YAML pipeline with template parameters, or create a classic release, through
the azure-devops SDK.

Rule ``pipeline`` keys: ``project``, and either ``pipeline_id`` (Runs - Run Pipeline with
``templateParameters`` model, version, source, kind, eventId, tags, artifactUri, registry,
trackingUri; see
``templates/azure-pipelines``) or ``release_definition_id`` (Releases - Create with the release
variables ``MODEL_NAME``, ``MODEL_VERSION``, ``MODEL_SOURCE``, ``EVENT_ID``, ``MODEL_TAGS``,
``ARTIFACT_URI``, ``MODEL_REGISTRY``, ``MODEL_TRACKING_URI`` — mark them "Settable at release time" in the definition — and, with
``artifact_alias`` + ``artifact_version``, that artifact's version: ``model-version`` or ``tag:KEY``, see
``artifact_reference``; without them the definition's default artifact version). ``ref`` (YAML pipelines: branch to run,
default the pipeline's default branch), ``parameters`` (static extra template parameters or
release variables).

Settings: ``SYSTEM_COLLECTIONURI`` (https://dev.azure.com/ORG/ or an Azure DevOps Server
collection URL; a rule's ``organization``, URL or name, wins) with ``AZURE_DEVOPS_EXT_PAT`` (a personal access token: Build read & execute,
Release read, write & execute) or ``SYSTEM_ACCESSTOKEN`` (the pipeline's OAuth token).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Mapping

from ..errors import ConfigError, PayloadError
from ..render import INPUT_VARIABLES, pipeline_inputs
from . import DispatchResult, PipelineRun, extra_values
from .retry import ApiFailure, call, parse_retry_after, timeout

RELEASE_AREA_ID = "efc2f575-36ef-48e9-b672-0c6fb4a48ac5"
TEMPLATE_PARAMETERS = {
    "model": "model",
    "version": "version",
    "source": "source",
    "kind": "kind",
    "event-id": "eventId",
    "tags": "tags",
    "artifact-uri": "artifactUri",
    "registry": "registry",
    "tracking-uri": "trackingUri",
}
FIXES = {
    400: "Azure DevOps rejected the request: a YAML pipeline must declare the parameters model, version, source, "
    "kind, eventId, tags, artifactUri, registry and trackingUri (`pipeline-plugin init --provider azure-devops` writes one); a release "
    "definition must define the variables MODEL_NAME, MODEL_VERSION ... as settable at release time.",
    401: "Set AZURE_DEVOPS_EXT_PAT to a valid personal access token (or SYSTEM_ACCESSTOKEN inside a pipeline); "
    "the one given was rejected.",
    403: "The token may not start this pipeline: it needs Build (read & execute) or Release (read, write & "
    "execute), and the pipeline's permissions must allow the identity to queue it.",
    404: "Check the rule's pipeline.project and pipeline.pipeline_id / pipeline.release_definition_id, and "
    "SYSTEM_COLLECTIONURI (https://dev.azure.com/ORG/).",
    0: "Check the rule's pipeline section and the pipeline definition.",
}


class _LastResponse:
    """Remembers the status and headers of the last answer (the SDK's errors do not keep them)."""

    def __init__(self) -> None:
        self.local = threading.local()

    def clear(self) -> None:
        self.local.response = None

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self.local.response = response

    def get(self) -> Any:
        return getattr(self.local, "response", None)


def _to_failure(last: _LastResponse):
    def convert(exc: Exception) -> ApiFailure | None:
        from azure.devops.exceptions import AzureDevOpsAuthenticationError, AzureDevOpsClientRequestError
        from msrest.exceptions import ClientRequestError

        response = last.get()
        if isinstance(exc, (AzureDevOpsAuthenticationError, AzureDevOpsClientRequestError)) and response is not None:
            message = getattr(exc, "message", None) or str(exc)
            message = re.sub(r"\s*Operation returned a \d+ status code\.$", "", message)
            return ApiFailure(response.status_code, message, parse_retry_after(response.headers.get("Retry-After")))
        if isinstance(exc, ClientRequestError):  # no answer: timeout, refused connection
            return ApiFailure.no_answer("Azure DevOps", exc)
        return None

    return convert


def collection_url(pipeline: Mapping[str, Any] | None = None) -> str:
    """The rule's ``pipeline.organization`` (URL, or name for dev.azure.com), else SYSTEM_COLLECTIONURI."""
    org = str((pipeline or {}).get("organization") or "")
    if org and not re.match(r"^https?://", org):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,49}", org):
            raise ConfigError(f"pipeline.organization is {org!r}; give the organization URL or its name")
        org = f"https://dev.azure.com/{org}"
    url = org or os.environ.get("SYSTEM_COLLECTIONURI") or ""
    if not re.match(r"^https?://", url):
        raise ConfigError(
            "SYSTEM_COLLECTIONURI is not set: set it to your organization's URL, e.g. https://dev.azure.com/ORG/ "
            "(inside Azure Pipelines it is predefined)"
        )
    return url.rstrip("/") + "/"


def credentials() -> Any:
    from msrest.authentication import BasicAuthentication, BasicTokenAuthentication

    pat = os.environ.get("AZURE_DEVOPS_EXT_PAT")
    if pat:
        return BasicAuthentication("", pat)
    token = os.environ.get("SYSTEM_ACCESSTOKEN")
    if token:
        return BasicTokenAuthentication({"access_token": token})
    raise ConfigError(
        "no Azure DevOps credentials: set AZURE_DEVOPS_EXT_PAT (a personal access token) or, inside a pipeline, "
        "map SYSTEM_ACCESSTOKEN: $(System.AccessToken) into the step's env"
    )


def _configure(client: Any, last: _LastResponse) -> Any:
    client.config.retry_policy.retries = 0  # retries are ours (bounded, Retry-After aware)
    client.config.connection.timeout = timeout()
    client.config.hooks.append(last.hook)
    return client


def _web_link(model: Any) -> str | None:
    links = getattr(model, "_links", None)
    if links is None:
        return None
    found = {**(getattr(links, "additional_properties", None) or {}), **(getattr(links, "links", None) or {})}
    web = found.get("web")
    if isinstance(web, Mapping):
        return web.get("href")
    return None


def _int_setting(p: Mapping[str, Any], key: str, rule: str) -> int | None:
    value = p.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not str(value).isdigit():
        raise ConfigError(f"rule {rule!r}: pipeline.{key} is {value!r}; it must be the numeric id from its URL")
    return int(value)


ARTIFACT_VERSION_FORMS = ("model-version", "tag:KEY")


def artifact_reference(pipeline: Mapping[str, Any], event: Any, rule: str) -> tuple[str, str, str | None] | None:
    """(alias, version id, version name) of the release's artifact, from the rule's ``artifact_alias``
    and ``artifact_version``; None when the rule names no artifact (the definition's default version).

    ``artifact_version``: ``model-version`` (the artifact's versions are the model's versions: a
    package, an image tagged with the model version, an Azure ML model artifact) or ``tag:KEY`` (the
    model version's tag KEY holds the artifact version id, e.g. the id of the build that trained it;
    for a Build artifact, Releases - Create's ``instanceReference.id`` is the build id).
    """
    alias = pipeline.get("artifact_alias")
    how = pipeline.get("artifact_version")
    if not alias:
        if how:
            raise ConfigError(f"rule {rule!r}: pipeline.artifact_version is {how!r} but pipeline.artifact_alias is not "
                              "set; name the release definition's artifact alias (e.g. '_model-build') or drop it")
        return None
    if not how:
        raise ConfigError(
            f"rule {rule!r}: pipeline.artifact_alias is {alias!r} but pipeline.artifact_version is not set; say how the "
            "artifact's version is found: 'model-version' (its versions are the model's) or 'tag:KEY' (the model "
            "version's tag KEY holds it, e.g. 'tag:build_id' for the id of the build that produced the model)")
    how = str(how)
    if how == "model-version":
        return str(alias), str(event.version), str(event.version)
    if how.startswith("tag:") and how[4:]:
        key = how[4:]
        value = str((event.tags or {}).get(key) or "").strip()
        if not value:
            raise PayloadError(
                f"rule {rule!r}: pipeline.artifact_version is {how!r} but model {event.model} version {event.version} "
                f"has no tag {key!r}; tag the model version with the artifact version id (e.g. the build id)",
                field=f"tags.{key}")
        if len(value) > 256 or not re.fullmatch(r"[A-Za-z0-9._:@/+-]+", value):
            raise PayloadError(f"tag {key!r} is {value[:64]!r}; an artifact version id is letters, digits and ._:@/+-",
                               field=f"tags.{key}")
        return str(alias), value, None
    raise ConfigError(f"rule {rule!r}: pipeline.artifact_version is {how!r}; use one of "
                      f"{', '.join(ARTIFACT_VERSION_FORMS)}")


class AzureDevOpsProvider:
    name = "azure-devops"

    def dispatch(self, run: PipelineRun) -> DispatchResult:
        p = run.pipeline
        project = str(p.get("project") or "")
        if not re.fullmatch(r"[^/\\\[\]:|<>+=;?*\"\x00-\x1f]{1,64}", project) or project.strip(". ") == "":
            raise ConfigError(f"rule {run.rule_name!r}: pipeline.project is {project!r}; set it to the project name or id")
        pipeline_id = _int_setting(p, "pipeline_id", run.rule_name)
        definition_id = _int_setting(p, "release_definition_id", run.rule_name)
        if (pipeline_id is None) == (definition_id is None):
            raise ConfigError(
                f"rule {run.rule_name!r}: set exactly one of pipeline.pipeline_id (a YAML pipeline) or "
                "pipeline.release_definition_id (a classic release definition)"
            )
        extra = p.get("parameters") or {}
        if not isinstance(extra, Mapping):
            raise ConfigError(f"rule {run.rule_name!r}: pipeline.parameters must be a mapping of name to value")
        inputs = pipeline_inputs(run.event, p, run.run_id)
        reference = artifact_reference(p, run.event, run.rule_name) if definition_id is not None else None
        base = collection_url(p)
        creds = credentials()
        last = _LastResponse()

        def api(fn: Any, action: str, starts: bool = False) -> Any:
            def attempt() -> Any:
                last.clear()
                return fn()

            return call(attempt, service="Azure DevOps", action=action, to_failure=_to_failure(last), fixes=FIXES,
                        starts=starts)

        if pipeline_id is not None:
            return self._run_pipeline(api, base, creds, last, run, project, pipeline_id, inputs, extra)
        return self._create_release(api, base, creds, last, run, project, definition_id, inputs, extra, reference)

    def _run_pipeline(self, api, base, creds, last, run, project, pipeline_id, inputs, extra) -> DispatchResult:
        from azure.devops.v7_1.pipelines.models import (
            RepositoryResourceParameters,
            RunPipelineParameters,
            RunResourcesParameters,
        )
        from azure.devops.v7_1.pipelines.pipelines_client import PipelinesClient

        client = _configure(PipelinesClient(base_url=base, creds=creds), last)
        parameters = {**extra_values(extra),
                      **{TEMPLATE_PARAMETERS[k]: v for k, v in inputs.items()}}
        body = RunPipelineParameters(template_parameters=parameters)
        ref = run.pipeline.get("ref")
        if ref:
            if not re.fullmatch(r"[A-Za-z0-9._/-]+", str(ref)):
                raise ConfigError(f"rule {run.rule_name!r}: pipeline.ref is {ref!r}; expected a branch like 'main'")
            full = str(ref) if str(ref).startswith("refs/") else f"refs/heads/{ref}"
            body.resources = RunResourcesParameters(repositories={"self": RepositoryResourceParameters(ref_name=full)})
        result = api(lambda: client.run_pipeline(body, project, pipeline_id), f"run pipeline {pipeline_id} in {project}",
                     starts=True)
        url = _web_link(result) or f"{base}{project}/_build/results?buildId={result.id}"
        return DispatchResult(
            provider=self.name,
            status="dispatched",
            url=url,
            external_id=str(result.id),
            detail=f"run {result.id} ({getattr(result, 'name', '') or ''}) of pipeline {pipeline_id} in {project}".replace(" ()", ""),
            data={"project": project, "pipeline_id": pipeline_id, "mode": "pipeline"},
        )

    def _create_release(self, api, base, creds, last, run, project, definition_id, inputs, extra,
                        reference) -> DispatchResult:
        from azure.devops.v7_1.location.location_client import LocationClient
        from azure.devops.v7_1.release.models import (
            ArtifactMetadata,
            BuildVersion,
            ConfigurationVariableValue,
            ReleaseStartMetadata,
        )
        from azure.devops.v7_1.release.release_client import ReleaseClient

        locations = _configure(LocationClient(base_url=base, creds=creds), last)
        areas = api(lambda: locations.get_resource_areas(), "look up the Release service URL") or []
        release_url = next((a.location_url for a in areas if (a.id or "").lower() == RELEASE_AREA_ID), None) or base
        client = _configure(ReleaseClient(base_url=release_url, creds=creds), last)
        variables = extra_values(extra)
        variables.update({INPUT_VARIABLES[k]: v for k, v in inputs.items()})
        metadata = ReleaseStartMetadata(
            definition_id=definition_id,
            description=f"{inputs['model']} {inputs['version']} from {inputs['source']} (pipeline-plugin {inputs['event-id']})",
            reason="none",
            is_draft=False,
            variables={k: ConfigurationVariableValue(value=v) for k, v in variables.items()},
        )
        if reference is not None:
            alias, version_id, version_name = reference
            metadata.artifacts = [ArtifactMetadata(
                alias=alias, instance_reference=BuildVersion(id=version_id, name=version_name))]
        result = api(lambda: client.create_release(metadata, project), f"create a release of definition {definition_id} in {project}",
                     starts=True)
        url = _web_link(result) or f"{base}{project}/_releaseProgress?_a=release-pipeline-progress&releaseId={result.id}"
        return DispatchResult(
            provider=self.name,
            status="dispatched",
            url=url,
            external_id=str(result.id),
            detail=f"release {result.id} ({result.name}) of definition {definition_id} in {project}",
            data={"project": project, "release_definition_id": definition_id, "mode": "release"},
        )


PROVIDER = AzureDevOpsProvider()
