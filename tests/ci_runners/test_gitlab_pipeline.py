"""The GitLab pipeline `pipeline-plugin render --provider gitlab` writes, run by a real third-party
runner (gitlab-ci-local, shell executor) on this machine's Docker Engine: package -> deploy-staging
-> smoke-test -> promote-production, each job in its own copy of the project, installing the tool
the way the template does (`pip install "$PLUGIN_SPEC"` into a fresh venv; here the wheel built from
this checkout), handing IMAGE / SCORING_URI on through dotenv reports.

A version whose answer differs from the expected output then stops in staging, and production keeps
serving the version before it. That second pipeline is the CI/CD catalog component
(templates/deploy-model.yml) included the way `init --provider gitlab --component` writes it, given
the event as the pipeline variables `dispatch` sends: the same jobs (test_gitlab_component.py), run.

What the jobs share is set in `runner_variables` (the CI/CD variables a GitLab project would hold):
each job its own empty state dir and one PostgreSQL database (`PIPELINE_PLUGIN_DATABASE_URL`) for
all. The versions are registered in a real MLflow server; `package` fetches `models:/NAME/VERSION`
from the tracking URI the event names, and the promotion moves MLflow's `production` alias.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import unused_port

from pipeline_plugin.ci import gitlab_component
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.render import INPUT_VARIABLES, pipeline_inputs

from tests.ci_chain import assert_close, cleanup, pipeline_settings, production_alias, score, serves, serving

from . import gitlab_local

pytestmark = [pytest.mark.docker, pytest.mark.mlflow, pytest.mark.slow, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "churn"


@pytest.fixture(scope="module")
def runner():
    try:
        return gitlab_local.executable()
    except gitlab_local.MissingTool as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """This checkout's commit (HEAD, as CI's clone has it) as the wheel a release would publish; the
    jobs' PLUGIN_SPEC points at it."""
    out, src = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [whl] = out.glob("pipeline_plugin-*.whl")
    return whl


@pytest.fixture(scope="module")
def service(docker_client, base_image):
    return f"gl-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory, service):
    """A real MLflow server with versions 1 and 2 of the churn example registered under a name of
    this test (`examples/churn/train.py --register`, as the example's README says)."""
    import os

    from tests.services import mlflow_server

    name = f"churn-{service}"
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as server:
        for _version in ("1", "2"):
            proc = subprocess.run([sys.executable, str(EXAMPLE / "train.py"), "--register", name,
                                   "--out", str(tmp_path_factory.mktemp("trained"))],
                                  env={**os.environ, "MLFLOW_TRACKING_URI": server.url}, capture_output=True, text=True,
                                  timeout=300)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        yield server.url, name


@pytest.fixture(scope="module")
def database_url(postgres, service) -> str:
    """One empty PostgreSQL database: the store every job of both pipelines shares."""
    return postgres.create_database(f"t_{service.replace('-', '_')}")


@pytest.fixture(scope="module")
def deployed(docker_client, service, database_url, tmp_path_factory):
    """Everything the pipelines start is stopped afterwards."""
    proxy_dir = tmp_path_factory.mktemp("addresses")
    yield proxy_dir
    cleanup(docker_client, service, database_url, proxy_dir)


def rule(service: str, model: str, staging: int, production: int) -> str:
    return yaml.safe_dump({
        "name": "deploy-churn",
        "match": {"source": "mlflow", "model": model},
        "pipeline": {
            "provider": "gitlab",
            "project": "acme/models",
            **pipeline_settings(service, staging, production),
        },
    }, sort_keys=False)


def render(workdir: Path, service: str, ports: tuple[int, int], mlflow: tuple[str, str], version: str) -> str:
    """`pipeline-plugin render --provider gitlab` for MLflow's event (registered model version
    created; its registry identity names the tracking server), as a user runs it."""
    _, model = mlflow
    triggers = workdir / "triggers"
    triggers.mkdir(parents=True, exist_ok=True)
    (triggers / "deploy-churn.yml").write_text(rule(service, model, *ports))
    event_file = workdir / "event.json"
    event_file.write_text(json.dumps(event(mlflow, version)))
    out = workdir / "rendered"
    proc = subprocess.run([str(Path(sys.executable).with_name("pipeline-plugin")), "render", "--provider", "gitlab",
                           "--triggers", str(triggers), "--rule", "deploy-churn", "--event", str(event_file), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return (out / ".gitlab-ci.yml").read_text()


def event(mlflow: tuple[str, str], version: str) -> dict:
    tracking_uri, model = mlflow
    return {"source": "mlflow", "kind": "model_version.created", "model": model, "version": version,
            "tags": {"stage": "candidate"}, "delivery_id": f"d-{version}", "registry": {"tracking_uri": tracking_uri}}


def dispatched_variables(mlflow: tuple[str, str], version: str) -> dict[str, str]:
    """The pipeline variables `dispatch --provider gitlab` sends for MLflow's event."""
    inputs = pipeline_inputs(ModelVersionEvent.from_dict(event(mlflow, version)), {}, f"run-{version}")
    return {INPUT_VARIABLES[key]: value for key, value in inputs.items()}


def component_project(where: Path, service: str, ports: tuple[int, int], expected: dict) -> Path:
    """The project with the component at the catalog's path and the include `init --component`
    writes for the rule (gitlab-ci-local resolves the project's own component at its commit SHA)."""
    files = {**project_files("x: {script: [true]}\n", expected), "templates/deploy-model.yml": ROOT / "templates" / "deploy-model.yml"}
    project = gitlab_local.make_project(where, files)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True, check=True).stdout.strip()
    # runner tags: gitlab-ci-local 4.64's copy of the schema refuses the default `tags: []` (GitLab takes it)
    pipeline = {**pipeline_settings(service, *ports), "runner_tags": "pipeline-plugin"}
    (project / ".gitlab-ci.yml").write_text(
        gitlab_component.include(pipeline, "deploy-churn", ref=f"$CI_SERVER_FQDN/acme/models/deploy-model@{sha}"))
    return project


def project_files(pipeline: str, expected: dict) -> dict:
    """The repository the pipeline runs in: the rendered `.gitlab-ci.yml` and what the rule names."""
    return {
        ".gitlab-ci.yml": pipeline,
        "score.py": EXAMPLE / "score.py",
        "requirements.txt": EXAMPLE / "requirements.txt",
        "sample.json": EXAMPLE / "sample.json",
        "expected.json": json.dumps(expected),
    }


def runner_variables(wheel: Path, database_url: str, proxy_dir: Path) -> dict[str, str]:
    """The project's CI/CD variables (and the runner's environment). Like GitLab's, they win over
    the file's own; gitlab-ci-local expands `$CI_...` in them per job."""
    return {
        # the template's own install line, pointed at this checkout's wheel with the extras it names
        "PLUGIN_SPEC": f"pipeline-plugin[mlflow,postgres] @ {wheel.as_uri()}",
        # every job its own empty state dir; what they share is the database
        "PIPELINE_PLUGIN_STATE_DIR": "$CI_PROJECT_DIR/.state-$CI_JOB_NAME",
        "PIPELINE_PLUGIN_DATABASE_URL": database_url,
        # the runner host's folder for the stable addresses (nginx) of the docker target
        "PIPELINE_PLUGIN_PROXY_DIR": str(proxy_dir),
    }


def test_rendered_gitlab_pipeline_deploys_under_gitlab_ci_local_and_a_wrong_answer_stops_in_staging(
        runner, wheel, service, mlflow, database_url, deployed, tmp_path, docker_client):
    expected = json.loads((EXAMPLE / "expected.json").read_text())
    ports = (unused_port(), unused_port())
    variables = runner_variables(wheel, database_url, proxy_dir=deployed)

    # 1. version 1: every stage passes, production answers POST /score
    good = gitlab_local.make_project(tmp_path / "run1" / "project",
                                     project_files(render(tmp_path / "run1", service, ports, mlflow, "1"), expected))
    run1 = gitlab_local.run(good, variables)
    assert run1.status() == {
        "package": "success", "deploy-staging": "success", "smoke-test": "success",
        "promote-production": "success", "rollback-production": "skipped",
        "stop-staging": "skipped", "stop-production": "skipped",  # the environments' manual on_stop jobs
    }, run1.explain()
    assert run1.returncode == 0, run1.explain()
    # the jobs kept nothing in their own state dirs: what they shared is the database, which any
    # machine now reads
    assert not list(good.glob(f"{gitlab_local.STATE}/builds/**/*.sqlite")), "a job used an embedded store"
    assert serves(service, database_url, tmp_path) == {"staging": "1", "production": "1"}
    assert production_alias(*mlflow) == "1"  # the promotion wrote back to the registry
    assert run1.dotenv("package")["IMAGE"].endswith(":1"), run1.explain()
    staging_uri = run1.dotenv("deploy-staging")["SCORING_URI"]
    production_uri = run1.dotenv("promote-production")["SCORING_URI"]
    assert f":{ports[0]}/" in staging_uri and f":{ports[1]}/" in production_uri, (staging_uri, production_uri)
    assert_close(score(production_uri), expected)
    assert serving(docker_client, service, "production") == {"1"}

    # 2. version 2 with an expected output it does not give, through the catalog component: stops at
    # the staging smoke test
    wrong = {**expected, "predictions": [1 - p for p in expected["predictions"]]}
    bad = component_project(tmp_path / "run2" / "project", service, ports, wrong)
    run2 = gitlab_local.run(bad, {**variables, **dispatched_variables(mlflow, "2")})
    assert run2.status() == {
        "package": "success", "deploy-staging": "success", "smoke-test": "failed",
        "promote-production": "skipped", "rollback-production": "skipped",
        "stop-staging": "skipped", "stop-production": "skipped",
    }, run2.explain()
    assert run2.dotenv("package")["IMAGE"].endswith(":2"), run2.explain()
    assert run2.returncode != 0
    assert "predictions" in run2.jobs["smoke-test"].log, run2.explain()
    assert serving(docker_client, service, "staging") == {"2"}
    assert serves(service, database_url, tmp_path) == {"staging": "2", "production": "1"}
    assert production_alias(*mlflow) == "1"
    assert serving(docker_client, service, "production") == {"1"}
    assert_close(score(production_uri), expected)
