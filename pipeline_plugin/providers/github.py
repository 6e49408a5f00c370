"""GitHub Actions: start the rule's workflow through the REST API with PyGithub.

Rule ``pipeline`` keys: ``repository`` (owner/name), ``workflow`` (file name or id), ``ref``
(default: the repository's default branch), ``mode`` (``workflow_dispatch``, the default, or
``repository_dispatch``), ``event_type`` (repository_dispatch, default ``pipeline-plugin.deploy``),
``inputs`` (static extra workflow inputs), ``return_run_details`` (default true; GitHub Enterprise
Server releases without it answer 204 and the run URL is the workflow's page).

Settings: ``GITHUB_API_URL`` (default https://api.github.com; GitHub Enterprise Server:
https://HOST/api/v3), ``GITHUB_TOKEN`` (or ``GH_TOKEN``), or a GitHub App: ``GITHUB_APP_ID``,
``GITHUB_APP_PRIVATE_KEY`` (PEM text or a file path) and ``GITHUB_APP_INSTALLATION_ID``.

The workflow receives the inputs ``model``, ``version``, ``source``, ``kind``, ``event-id``, ``tags``
(JSON), ``artifact-uri``, ``registry`` and ``tracking-uri`` (see ``templates/github``); repository_dispatch sends the same keys in
``client_payload``. GitHub's limits are checked before sending: 25 workflow inputs, 10
``client_payload`` keys, 64 KB of payload.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..render import pipeline_inputs
from . import DispatchResult, PipelineRun, extra_values
from .retry import ApiFailure, call, parse_retry_after, timeout

MAX_INPUTS = 25
MAX_PAYLOAD_KEYS = 10
MAX_PAYLOAD_BYTES = 64 * 1024
DEFAULT_API_URL = "https://api.github.com"

FIXES = {
    401: "Set GITHUB_TOKEN to a valid token (or GitHub App credentials); the one given was rejected.",
    403: "The token lacks permission: it needs `actions: write` (workflow_dispatch) or `contents: write` "
    "(repository_dispatch) on the repository.",
    404: "Check the rule's pipeline.repository and pipeline.workflow (the workflow file must exist on the "
    "default branch, and on pipeline.ref) and that the token can see the repository.",
    422: "GitHub rejected the request: check pipeline.ref names a branch or tag, and that the workflow declares "
    "workflow_dispatch with the inputs model, version, source, kind, event-id, tags, artifact-uri, registry and "
    "tracking-uri "
    "(`pipeline-plugin init --provider github` writes one).",
}


def to_failure(exc: Exception) -> ApiFailure | None:
    import requests
    from github import GithubException

    if isinstance(exc, GithubException):
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        data = exc.data if isinstance(exc.data, dict) else {}
        message = str(data.get("message") or exc.data or "")
        if data.get("errors"):
            message += " " + json.dumps(data["errors"])
        retry_after = parse_retry_after(headers.get("retry-after"))
        retryable = None
        if exc.status == 403 and (retry_after is not None or headers.get("x-ratelimit-remaining") == "0"):
            retryable = True  # GitHub's (secondary) rate limit answers 403
        return ApiFailure(exc.status, message, retry_after, retryable)
    if isinstance(exc, (requests.Timeout, requests.ConnectionError)):
        return ApiFailure.no_answer("GitHub", exc)
    return None


def api_url() -> str:
    return (os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")


def web_url() -> str:
    """https://github.com, or the Enterprise Server's own host."""
    if os.environ.get("GITHUB_SERVER_URL"):
        return os.environ["GITHUB_SERVER_URL"].rstrip("/")
    api = api_url()
    if api == DEFAULT_API_URL:
        return "https://github.com"
    return re.sub(r"/api/v3$", "", api)


def _auth() -> Any:
    from github import Auth

    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    if token:
        return Auth.Token(token)
    app_id = os.environ.get("GITHUB_APP_ID")
    if app_id:
        key = os.environ.get("GITHUB_APP_PRIVATE_KEY", "")
        if key and "-----BEGIN" not in key and Path(key).is_file():
            key = Path(key).read_text()
        installation = os.environ.get("GITHUB_APP_INSTALLATION_ID", "")
        if not key or not installation.isdigit():
            raise ConfigError(
                "GitHub App credentials are incomplete: set GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY (PEM text or "
                "file) and GITHUB_APP_INSTALLATION_ID (a number)"
            )
        return Auth.AppAuth(app_id, key).get_installation_auth(int(installation))
    raise ConfigError(
        "no GitHub credentials: set GITHUB_TOKEN (a token with actions:write on the repository) or "
        "GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY and GITHUB_APP_INSTALLATION_ID"
    )


def client() -> Any:
    from github import Github

    return Github(base_url=api_url(), auth=_auth(), timeout=int(max(1, timeout())), retry=None)


def _setting(pipeline: Mapping[str, Any], key: str, rule: str, pattern: str, example: str) -> str | None:
    value = pipeline.get(key)
    if value is None or value == "":
        return None
    value = str(value)
    if not re.fullmatch(pattern, value):
        raise ConfigError(f"rule {rule!r}: pipeline.{key} is {value!r}; expected something like {example!r}")
    return value


class GitHubProvider:
    name = "github"

    def dispatch(self, run: PipelineRun) -> DispatchResult:
        p = run.pipeline
        repository = _setting(p, "repository", run.rule_name, r"[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+", "owner/name")
        if repository is None:
            raise ConfigError(f"rule {run.rule_name!r}: pipeline.repository is missing; set it to owner/name")
        mode = p.get("mode") or "workflow_dispatch"
        if mode not in ("workflow_dispatch", "repository_dispatch"):
            raise ConfigError(
                f"rule {run.rule_name!r}: pipeline.mode is {mode!r}; use workflow_dispatch or repository_dispatch"
            )
        inputs = pipeline_inputs(run.event, p, run.run_id)
        # every limit is checked before the first request
        if mode == "repository_dispatch":
            event_type, payload = self._client_payload(run, inputs)
        else:
            workflow, all_inputs = self._workflow_inputs(run, inputs)
        ref = _setting(p, "ref", run.rule_name, r"[A-Za-z0-9._/-]+", "main")
        gh = client()
        # one request per dispatch where possible: a 404 on it names both repository and workflow
        html = f"{web_url()}/{repository}"
        data = {"repository": repository, "mode": mode}
        if mode == "repository_dispatch":
            owner, name = repository.split("/", 1)
            self._call(
                lambda: gh.requester.requestJsonAndCheck(
                    "POST", f"/repos/{owner}/{name}/dispatches",
                    input={"event_type": event_type, "client_payload": payload},
                ),
                f"send repository_dispatch {event_type} to {repository}", starts=True,
            )
            return DispatchResult(
                provider=self.name, status="dispatched", url=f"{html}/actions", external_id=None,
                detail=f"repository_dispatch {event_type!r} sent to {repository} (event-id {inputs['event-id']})",
                data={**data, "event_type": event_type},
            )
        if ref is None:
            ref = self._call(lambda: gh.get_repo(repository).default_branch, f"find repository {repository}")
        data.update(workflow=workflow, ref=ref)
        wf = gh.withLazy(True).get_repo(repository).get_workflow(workflow)
        details = bool(p.get("return_run_details", True))
        result = self._call(
            lambda: wf.create_dispatch(ref, all_inputs, throw=True, return_run_details=details),
            f"start workflow {workflow} in {repository}", starts=True,
        )
        if result is not True and getattr(result, "id", None):
            return DispatchResult(
                provider=self.name, status="dispatched", url=result.html_url, external_id=str(result.id),
                detail=f"workflow run {result.id} of {workflow} in {repository} at {ref}", data=data,
            )
        return DispatchResult(
            provider=self.name, status="dispatched", url=f"{html}/actions/workflows/{workflow}",
            external_id=None,
            detail=f"workflow {workflow} dispatched in {repository} at {ref} (event-id {inputs['event-id']})",
            data=data,
        )

    def _call(self, fn: Any, action: str, starts: bool = False) -> Any:
        return call(fn, service="GitHub", action=action, to_failure=to_failure, fixes=FIXES, starts=starts)

    def _workflow_inputs(self, run: PipelineRun, inputs: dict[str, str]) -> tuple[str, dict[str, str]]:
        p = run.pipeline
        workflow = _setting(p, "workflow", run.rule_name, r"[A-Za-z0-9._-]+(\.ya?ml)?", "deploy-model.yml")
        if workflow is None:
            raise ConfigError(
                f"rule {run.rule_name!r}: pipeline.workflow is missing; set it to the workflow file name "
                "(e.g. deploy-model.yml) or id"
            )
        extra = p.get("inputs") or {}
        if not isinstance(extra, Mapping):
            raise ConfigError(f"rule {run.rule_name!r}: pipeline.inputs must be a mapping of input name to value")
        all_inputs = {**extra_values(extra), **inputs}
        if len(all_inputs) > MAX_INPUTS:
            raise ConfigError(
                f"rule {run.rule_name!r}: {len(all_inputs)} workflow inputs, GitHub accepts at most {MAX_INPUTS}; "
                f"remove some of pipeline.inputs ({', '.join(sorted(extra))})"
            )
        size = len(json.dumps(all_inputs).encode())
        if size > MAX_PAYLOAD_BYTES:
            raise ConfigError(
                f"rule {run.rule_name!r}: workflow inputs are {size} bytes, GitHub accepts at most "
                f"{MAX_PAYLOAD_BYTES}; forward fewer tags (pipeline.forward_tags) or shorten pipeline.inputs"
            )
        return workflow, all_inputs

    def _client_payload(self, run: PipelineRun, inputs: dict[str, str]) -> tuple[str, dict[str, str]]:
        event_type = str(run.pipeline.get("event_type") or "pipeline-plugin.deploy")
        if not 0 < len(event_type) <= 100:
            raise ConfigError(f"rule {run.rule_name!r}: pipeline.event_type must be 1 to 100 characters")
        payload = {**inputs, "rule": run.rule_name}
        if len(payload) > MAX_PAYLOAD_KEYS:
            raise ConfigError(
                f"rule {run.rule_name!r}: client_payload has {len(payload)} keys, GitHub accepts at most "
                f"{MAX_PAYLOAD_KEYS}"
            )
        size = len(json.dumps(payload).encode())
        if size >= MAX_PAYLOAD_BYTES:
            raise ConfigError(
                f"rule {run.rule_name!r}: client_payload is {size} bytes, GitHub accepts less than "
                f"{MAX_PAYLOAD_BYTES}; forward fewer tags (pipeline.forward_tags)"
            )
        return event_type, payload


PROVIDER = GitHubProvider()
