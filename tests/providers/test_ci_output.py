"""What the stage commands leave where users look: GitHub/GitLab deployment records (checked against
the official API descriptions), job summaries, Azure Pipelines logging commands, GitLab dotenv."""

from __future__ import annotations

from pipeline_plugin.ci import deployments as ci_deployments
from pipeline_plugin.ci import output as ci_output

from .helpers import TOKEN, Contract, Reply

DEPLOY = "repos/create-deployment"
STATUS = "repos/create-deployment-status"


def github_ci(serve, monkeypatch, tmp_path):
    server = serve([Contract("github.json")], auth=lambda r: r.header("Authorization") == f"Bearer {TOKEN}")
    ids = iter(range(501, 600))
    server.on(DEPLOY, lambda req: Reply(201, {"id": next(ids), "environment": req.body["environment"],
                                              "payload": req.body["payload"], "ref": req.body["ref"]}))
    server.on(STATUS, lambda req: Reply(201, {"id": 1, "state": req.body["state"]}))
    for key, value in {"GITHUB_ACTIONS": "true", "GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "acme/models",
                       "GITHUB_API_URL": server.url, "GITHUB_SHA": "f" * 40, "GITHUB_RUN_ID": "777",
                       "GITHUB_SERVER_URL": "https://github.com", "RUNNER_TEMP": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    return server


def test_github_deployment_per_environment_with_statuses(serve, monkeypatch, tmp_path):
    server = github_ci(serve, monkeypatch, tmp_path)
    ci_deployments.record("staging", "in_progress", model="iris", version="7", service="iris")
    ci_deployments.record("staging", "success", scoring_uri="http://127.0.0.1:8890/score")
    ci_deployments.record("production", "in_progress", model="iris", version="7")
    ci_deployments.record("production", "failure", description="smoke test failed: p99 120 ms > 100 ms")
    deployments = server.calls(DEPLOY)
    assert [d.body["environment"] for d in deployments] == ["staging", "production"]
    assert deployments[0].body["payload"] == {"model": "iris", "version": "7", "service": "iris"}
    assert deployments[0].body["ref"] == "f" * 40 and deployments[1].body["production_environment"] is True
    statuses = [(c.params["deployment_id"], c.body["state"]) for c in server.calls(STATUS)]
    assert statuses == [("501", "in_progress"), ("501", "success"), ("502", "in_progress"), ("502", "failure")]
    success = server.calls(STATUS)[1].body
    assert success["environment_url"] == "http://127.0.0.1:8890/score"
    assert success["log_url"] == "https://github.com/acme/models/actions/runs/777"
    assert server.calls(STATUS)[3].body["description"].startswith("smoke test failed")


def test_a_refusing_deployments_api_never_fails_the_stage(serve, monkeypatch, tmp_path, capsys):
    server = github_ci(serve, monkeypatch, tmp_path)
    server.on(DEPLOY, Reply(403, {"message": "Resource not accessible by integration"}))
    assert ci_deployments.record("staging", "success", model="iris", version="7") == []
    out = capsys.readouterr().out
    assert "::warning::could not record the staging deployment on github" in out and "deployments: write" in out
    assert len(server.calls(DEPLOY)) == 1


def test_nothing_is_recorded_outside_ci_or_without_a_token(monkeypatch, tmp_path):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/models")
    monkeypatch.setenv("GITHUB_API_URL", "http://127.0.0.1:9")  # would fail loudly if called
    assert ci_deployments.record("staging", "success", model="iris", version="7") == []


def gitlab_ci(serve, monkeypatch, tmp_path):
    server = serve([Contract("gitlab.json")], auth=lambda r: r.header("PRIVATE-TOKEN") == TOKEN)
    server.on("postApiV4ProjectsIdDeployments", Reply(201, {"id": 91, "status": "running"}))
    server.on("putApiV4ProjectsIdDeploymentsDeploymentId", lambda req: Reply(200, {"id": 91, "status": req.body["status"]}))
    for key, value in {"GITLAB_CI": "true", "GITLAB_TOKEN": TOKEN, "CI_PROJECT_ID": "42", "CI_SERVER_URL": server.url,
                       "CI_API_V4_URL": f"{server.url}/api/v4", "CI_COMMIT_SHA": "a" * 40, "CI_COMMIT_REF_NAME": "main",
                       "CI_JOB_ID": "5", "PIPELINE_PLUGIN_DOTENV": str(tmp_path / "out.env")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RUNNER_TEMP", str(tmp_path))
    monkeypatch.delenv("CI_ENVIRONMENT_NAME", raising=False)
    return server


def test_gitlab_deployment_running_then_success(serve, monkeypatch, tmp_path):
    server = gitlab_ci(serve, monkeypatch, tmp_path)
    ci_deployments.record("staging", "in_progress", model="iris", version="7")
    ci_deployments.record("staging", "success", scoring_uri="http://x/score")
    [create] = server.calls("postApiV4ProjectsIdDeployments")
    assert create.body == {"environment": "staging", "sha": "a" * 40, "ref": "main", "tag": False, "status": "running"}
    [update] = server.calls("putApiV4ProjectsIdDeploymentsDeploymentId")
    assert update.params["deployment_id"] == "91" and update.body == {"status": "success"}


def test_gitlab_jobs_with_an_environment_are_left_to_gitlab(serve, monkeypatch, tmp_path):
    server = gitlab_ci(serve, monkeypatch, tmp_path)
    monkeypatch.setenv("CI_ENVIRONMENT_NAME", "staging")
    assert ci_deployments.record("staging", "success", model="iris", version="7") == []
    assert server.requests == []


def test_gitlab_dotenv_report(monkeypatch, tmp_path):
    monkeypatch.setenv("GITLAB_CI", "true")
    monkeypatch.setenv("PIPELINE_PLUGIN_DOTENV", str(tmp_path / "build.env"))
    ci_output.set_outputs({"scoring-uri": "http://h:1/score", "digest": "sha256:00"})
    assert (tmp_path / "build.env").read_text() == "SCORING_URI=http://h:1/score\nDIGEST=sha256:00\n"


def test_azure_pipelines_logging_commands(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TF_BUILD", "True")
    monkeypatch.setenv("AGENT_TEMPDIRECTORY", str(tmp_path))
    ci_output.set_outputs({"scoring-uri": "http://h:1/score;x"})
    ci_output.report_error("deploy failed]\nnext line")
    ci_output.report_warning("slow")
    md = ci_output.stage_summary("Promoted", model="iris", version="7", outcome="promoted")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "##vso[task.setvariable variable=scoring_uri;isOutput=true]http://h:1/score%3Bx"
    assert lines[1] == "##vso[task.logissue type=error]deploy failed%5D%0Anext line"
    assert lines[2] == "##vso[task.logissue type=warning]slow"
    assert lines[3].startswith("##vso[task.uploadsummary]")
    uploaded = lines[3].split("]", 1)[1]
    assert open(uploaded).read().strip() == md.strip()


def test_job_summary_reads_at_a_glance(monkeypatch, tmp_path):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    ci_output.stage_summary(
        "Smoke test: staging", model="iris", version="7", digest="sha256:abc",
        checks=[{"name": "status 200", "passed": True, "detail": "200"},
                {"name": "p99 < 100 ms", "passed": False, "detail": "p99 | 140 ms"}],
        latency_ms={"p50": 12, "p95": 30.5, "p99": 140}, error_rate=0.02)
    text = summary.read_text()
    assert "| model | `iris` |" in text and "| digest | `sha256:abc` |" in text
    assert "| latency | p50 12.0 ms, p95 30.5 ms, p99 140.0 ms |" in text and "| error rate | 2.00% |" in text
    assert "| `p99 < 100 ms` | ❌ failed | `p99 \\| 140 ms` |" in text
