"""Deployments where users look: the CI system's own deployment records.

Under GitHub Actions with a token (``GITHUB_TOKEN``), a deployment per environment through the
Deployments API: ``POST /repos/{owner}/{repo}/deployments`` (ref = the workflow's commit, the model
name and version in ``payload``), then statuses ``in_progress`` and ``success`` or ``failure`` with
``environment_url`` = the scoring URI and ``log_url`` = the workflow run. The repository's
Environments page and the pull request / commit then show which model version serves where.

Under GitLab CI with ``GITLAB_TOKEN``, a deployment through GitLab's deployments API
(``POST /projects/:id/deployments`` with status ``running``, then ``PUT .../deployments/:id`` with
``success`` or ``failed``) — unless the job declares ``environment:`` itself, in which case GitLab
already records the deployment and a second record would be a duplicate.

Recording never fails a stage: problems are reported as CI warnings. The deployment id of a started
record is kept in ``$RUNNER_TEMP`` (or ``$CI_BUILDS_DIR``/tmp) so a later command in the same job can
finish it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

from .output import report_warning

STATES = ("in_progress", "success", "failure")


def _state_file() -> Path:
    base = os.environ.get("RUNNER_TEMP") or os.environ.get("AGENT_TEMPDIRECTORY") or tempfile.gettempdir()
    job = os.environ.get("GITHUB_RUN_ID") or os.environ.get("CI_JOB_ID") or "local"
    return Path(base) / f"pipeline-plugin-deployments-{job}.json"


def _load() -> dict[str, Any]:
    try:
        return json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return {}


def _save(data: Mapping[str, Any]) -> None:
    path = _state_file()
    path.write_text(json.dumps(data))


def _warn(message: str) -> None:
    report_warning(message)
    print(f"warning: {message}", file=sys.stderr)


def _request(method: str, url: str, headers: Mapping[str, str], body: Mapping[str, Any], service: str, action: str) -> Any:
    import requests

    from ..providers.retry import ApiFailure, call, parse_retry_after, timeout

    def send() -> Any:
        response = requests.request(method, url, headers=dict(headers), json=dict(body), timeout=timeout())
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise ApiFailure(response.status_code, str(message)[:500], parse_retry_after(response.headers.get("Retry-After")))
        return response.json() if response.content else {}

    def to_failure(exc: Exception) -> ApiFailure | None:
        if isinstance(exc, (requests.Timeout, requests.ConnectionError)):
            return ApiFailure(None, f"no answer ({type(exc).__name__})")
        return None

    fixes = {
        401: "the token was rejected",
        403: "the token needs `deployments: write` (GitHub) or the api scope (GitLab)",
        404: "the repository or project was not found",
    }
    return call(send, service=service, action=action, to_failure=to_failure, fixes=fixes)


# ---- GitHub ------------------------------------------------------------------------------------
def _github_ready() -> bool:
    return bool(os.environ.get("GITHUB_ACTIONS") and os.environ.get("GITHUB_TOKEN") and os.environ.get("GITHUB_REPOSITORY"))


def _github(method_path: str) -> str:
    api = (os.environ.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/")
    return f"{api}/repos/{os.environ['GITHUB_REPOSITORY']}{method_path}"


def _github_headers() -> dict[str, str]:
    return {
        "Authorization": f"Bearer {os.environ['GITHUB_TOKEN']}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }


def run_url() -> str | None:
    """The URL of the current CI run (GitHub Actions, GitLab CI or Azure Pipelines), if any."""
    env = os.environ
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    if env.get("CI_JOB_URL"):
        return env["CI_JOB_URL"]
    if env.get("SYSTEM_COLLECTIONURI") and env.get("BUILD_BUILDID") and env.get("SYSTEM_TEAMPROJECT"):
        return f"{env['SYSTEM_COLLECTIONURI'].rstrip('/')}/{env['SYSTEM_TEAMPROJECT']}/_build/results?buildId={env['BUILD_BUILDID']}"
    return None


def _github_record(environment: str, state: str, info: Mapping[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    deployment_id = known.get("github")
    if deployment_id is None:
        ref = os.environ.get("GITHUB_SHA") or os.environ.get("GITHUB_REF_NAME") or "HEAD"
        created = _request("POST", _github("/deployments"), _github_headers(), {
            "ref": ref,
            "task": "deploy:model",
            "environment": environment,
            "auto_merge": False,
            "required_contexts": [],
            "payload": {k: v for k, v in info.items() if v is not None},
            "description": f"{info.get('model')} {info.get('version')}"[:140],
            "production_environment": environment == "production",
            "transient_environment": False,
        }, "GitHub", f"record a deployment to {environment}")
        if "id" not in created:  # 202: GitHub merged the default branch instead (auto_merge is off, so rare)
            raise RuntimeError(created.get("message", "GitHub did not create the deployment"))
        deployment_id = created["id"]
        known["github"] = deployment_id
    body: dict[str, Any] = {"state": state, "environment": environment, "auto_inactive": True}
    if info.get("scoring_uri"):
        body["environment_url"] = str(info["scoring_uri"])
    if run_url():
        body["log_url"] = run_url()
    if info.get("description"):
        body["description"] = str(info["description"])[:140]
    _request("POST", _github(f"/deployments/{deployment_id}/statuses"), _github_headers(), body,
             "GitHub", f"set deployment {deployment_id} to {state}")
    return {"system": "github", "id": deployment_id, "state": state}


# ---- GitLab ------------------------------------------------------------------------------------
_GITLAB_STATUS = {"in_progress": "running", "success": "success", "failure": "failed"}


def _gitlab_ready() -> bool:
    env = os.environ
    return bool(env.get("GITLAB_CI") and env.get("GITLAB_TOKEN") and env.get("CI_PROJECT_ID")
                and not env.get("CI_ENVIRONMENT_NAME"))


def _gitlab_record(environment: str, state: str, info: Mapping[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    env = os.environ
    api = f"{(env.get('CI_API_V4_URL') or env.get('CI_SERVER_URL', 'https://gitlab.com').rstrip('/') + '/api/v4')}"
    project = quote(env["CI_PROJECT_ID"], safe="")
    headers = {"PRIVATE-TOKEN": env["GITLAB_TOKEN"]}
    deployment_id = known.get("gitlab")
    status = _GITLAB_STATUS[state]
    if deployment_id is None:
        created = _request("POST", f"{api}/projects/{project}/deployments", headers, {
            "environment": environment,
            "sha": env.get("CI_COMMIT_SHA", ""),
            "ref": env.get("CI_COMMIT_REF_NAME", ""),
            "tag": bool(env.get("CI_COMMIT_TAG")),
            "status": status,
        }, "GitLab", f"record a deployment to {environment}")
        known["gitlab"] = created["id"]
        return {"system": "gitlab", "id": created["id"], "state": state}
    _request("PUT", f"{api}/projects/{project}/deployments/{deployment_id}", headers, {"status": status},
             "GitLab", f"set deployment {deployment_id} to {status}")
    return {"system": "gitlab", "id": deployment_id, "state": state}


def record(environment: str, state: str, **info: Any) -> list[dict[str, Any]]:
    """Record that ``environment`` is being deployed (``in_progress``), or was (``success`` /
    ``failure``). ``info``: ``model``, ``version``, ``service``, ``image``, ``digest``,
    ``scoring_uri``, ``description``. Returns what was recorded; never raises."""
    if state not in STATES:
        raise ValueError(f"deployment state must be one of {STATES}, got {state!r}")
    backends = [(name, fn) for name, ready, fn in (("github", _github_ready, _github_record),
                                                    ("gitlab", _gitlab_ready, _gitlab_record)) if ready()]
    if not backends:
        return []
    data = _load()
    known = data.setdefault(environment, {})
    done = []
    for name, fn in backends:
        try:
            done.append(fn(environment, state, info, known))
        except Exception as exc:  # noqa: BLE001 - recording must never fail the stage
            _warn(f"could not record the {environment} deployment on {name}: {getattr(exc, 'message', exc)}")
    if state != "in_progress":
        data.pop(environment, None)
    try:
        _save(data)
    except OSError as exc:
        _warn(f"could not keep the deployment id in {_state_file()}: {exc}")
    return done
