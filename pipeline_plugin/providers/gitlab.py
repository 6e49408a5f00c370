"""GitLab CI: start a pipeline through the REST API with python-gitlab.

Rule ``pipeline`` keys: ``project`` (``group/name`` or a numeric id), ``ref`` (default: the
project's default branch), ``trigger_token_env`` (name of an environment variable holding a
pipeline trigger token: the pipeline is then started with the trigger API instead of
``POST /projects/:id/pipeline``), ``variables`` (static extra CI/CD variables).

Settings: ``CI_SERVER_URL`` (default https://gitlab.com; a rule's ``url`` names a self-managed
instance instead) and
``GITLAB_TOKEN`` (a token with the ``api`` scope, needed unless a trigger token is used).

The pipeline receives the variables ``MODEL_NAME``, ``MODEL_VERSION``, ``MODEL_SOURCE``,
``MODEL_EVENT_KIND``, ``EVENT_ID``, ``MODEL_TAGS`` (JSON), ``ARTIFACT_URI``, ``MODEL_REGISTRY`` and
``MODEL_TRACKING_URI`` (see ``templates/gitlab``).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Mapping

from ..errors import ConfigError
from ..render import INPUT_VARIABLES, pipeline_inputs
from . import DispatchResult, PipelineRun, extra_values
from .retry import ApiFailure, call, parse_retry_after, timeout

DEFAULT_URL = "https://gitlab.com"
FIXES = {
    400: "GitLab rejected the pipeline: check pipeline.ref names a branch or tag and that .gitlab-ci.yml is valid "
    "for it (`pipeline-plugin init --provider gitlab` writes one). 'Insufficient permissions to set pipeline "
    "variables' means the project's minimum role for pipeline variables is above the token's.",
    401: "Set GITLAB_TOKEN to a valid token with the api scope (or the trigger token variable named by "
    "pipeline.trigger_token_env); the one given was rejected.",
    403: "The token may not run pipelines on this project: it needs the Developer role and the api scope, and "
    "protected branches need permission to merge or push. Projects made on GitLab 17.7 or later only let "
    "Maintainers pass pipeline variables (Settings > CI/CD > Variables: 'Minimum role to use pipeline "
    "variables'); lower that role or use a Maintainer's token.",
    404: "Check the rule's pipeline.project (group/name or id) and pipeline.ref, and that the token can see the "
    "project.",
    422: "GitLab could not create the pipeline for this ref; check pipeline.ref and the CI configuration.",
}


def server_url(pipeline: Mapping[str, Any] | None = None) -> str:
    """The rule's ``pipeline.url`` (a self-managed instance), else ``CI_SERVER_URL``, else gitlab.com."""
    return str((pipeline or {}).get("url") or os.environ.get("CI_SERVER_URL") or DEFAULT_URL).rstrip("/")


class _LastResponse:
    """Remembers the headers of the last answer (python-gitlab's errors do not keep them)."""

    def __init__(self) -> None:
        self.local = threading.local()

    def hook(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self.local.headers = response.headers

    def retry_after(self) -> float | None:
        headers = getattr(self.local, "headers", None)
        return parse_retry_after(headers.get("Retry-After")) if headers is not None else None


def _to_failure(last: _LastResponse):
    def convert(exc: Exception) -> ApiFailure | None:
        import requests
        from gitlab.exceptions import GitlabError

        if isinstance(exc, GitlabError) and exc.response_code:
            return ApiFailure(exc.response_code, str(exc.error_message), last.retry_after())
        if isinstance(exc, (requests.Timeout, requests.ConnectionError)):
            return ApiFailure.no_answer("GitLab", exc)
        return None

    return convert


def client(url: str, token: str | None, last: _LastResponse) -> Any:
    import gitlab
    import requests

    session = requests.Session()
    session.hooks["response"].append(last.hook)
    return gitlab.Gitlab(
        url=url, private_token=token, timeout=timeout(), retry_transient_errors=False, session=session
    )


class GitLabProvider:
    name = "gitlab"

    def dispatch(self, run: PipelineRun) -> DispatchResult:
        p = run.pipeline
        project = str(p.get("project") or "")
        if not re.fullmatch(r"[0-9]+|[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+", project):
            raise ConfigError(
                f"rule {run.rule_name!r}: pipeline.project is {project!r}; set it to the project path "
                "(group/name) or its numeric id"
            )
        ref = p.get("ref")
        if ref is not None and not re.fullmatch(r"[A-Za-z0-9._/-]+", str(ref)):
            raise ConfigError(f"rule {run.rule_name!r}: pipeline.ref is {ref!r}; expected a branch or tag like 'main'")
        extra = p.get("variables") or {}
        if not isinstance(extra, Mapping):
            raise ConfigError(f"rule {run.rule_name!r}: pipeline.variables must be a mapping of name to value")
        inputs = pipeline_inputs(run.event, p, run.run_id)
        variables = {**extra_values(extra), **{INPUT_VARIABLES[k]: v for k, v in inputs.items()}}

        trigger_env = p.get("trigger_token_env")
        trigger_token = None
        if trigger_env:
            trigger_token = os.environ.get(str(trigger_env))
            if not trigger_token:
                raise ConfigError(
                    f"rule {run.rule_name!r}: pipeline.trigger_token_env names {trigger_env!r}, which is not set; "
                    "export the project's pipeline trigger token in it"
                )
        token = os.environ.get("GITLAB_TOKEN")
        if not token and not (trigger_token and ref):
            raise ConfigError(
                "no GitLab credentials: set GITLAB_TOKEN (a token with the api scope), or give the rule a "
                "pipeline.trigger_token_env and a pipeline.ref"
            )
        last = _LastResponse()
        base = server_url(p)
        gl = client(base, token, last)

        def api(fn: Any, action: str, starts: bool = False) -> Any:
            return call(fn, service="GitLab", action=action, to_failure=_to_failure(last), fixes=FIXES, starts=starts)

        if ref is None:
            info = api(lambda: gl.projects.get(project, obey_rate_limit=False), f"find project {project}")
            ref = info.default_branch
        target = gl.projects.get(project, lazy=True)
        if trigger_token:
            pipeline = api(
                lambda: target.trigger_pipeline(str(ref), trigger_token, variables=variables, obey_rate_limit=False),
                f"trigger a pipeline on {project} at {ref}", starts=True,
            )
            how = "trigger token"
        else:
            pipeline = api(
                lambda: target.pipelines.create(
                    {"ref": str(ref), "variables": [{"key": k, "value": v} for k, v in variables.items()]},
                    obey_rate_limit=False,
                ),
                f"create a pipeline on {project} at {ref}", starts=True,
            )
            how = "pipelines API"
        pid = pipeline.get_id()
        url = getattr(pipeline, "web_url", None) or f"{base}/{project}/-/pipelines/{pid}"
        return DispatchResult(
            provider=self.name,
            status="dispatched",
            url=url,
            external_id=str(pid),
            detail=f"pipeline {pid} on {project} at {ref} ({how})",
            data={"project": project, "ref": str(ref), "mode": "trigger" if trigger_token else "pipelines"},
        )


PROVIDER = GitLabProvider()
