"""`pipeline-plugin init`: write a starter pipeline and trigger rule into a repository."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import yaml

from .. import output
from ..errors import ConfigError
from ..events import ModelVersionEvent
from ..render import ACTION_REF, DATABASE_URL_VARIABLE, check_value, render_pipeline

#: init --provider -> (render provider, dispatch provider)
PROVIDERS = {
    "github": ("github", "github"),
    "gitlab": ("gitlab", "gitlab"),
    "azure-devops": ("azure-pipelines", "azure-devops"),
    "azure-pipelines": ("azure-pipelines", "azure-devops"),
}

_TARGET = {
    "github": (
        "  repository: {repository}        # owner/name of this repository\n"
        "  workflow: deploy-model.yml\n"
        "  ref: main\n"
    ),
    "gitlab": (
        "  project: {repository}           # group/name of this project\n"
        "  ref: main\n"
    ),
    "azure-devops": (
        "  project: your-project\n"
        "  pipeline_id: 1                   # the number in the pipeline's URL (...?definitionId=1)\n"
    ),
}

_PIPELINE_FILE = "<pipeline file>"

SETTINGS = {
    "github": "GITHUB_TOKEN; GITHUB_API_URL for GitHub Enterprise Server",
    "gitlab": "GITLAB_TOKEN; CI_SERVER_URL for a self-managed instance",
    "azure-devops": "SYSTEM_COLLECTIONURI=https://dev.azure.com/ORG/ and AZURE_DEVOPS_EXT_PAT",
}

#: where the jobs run, per (dispatch provider, target kind): the docker and process targets serve on
#: the machine that ran `deploy`, so every job runs on that one self-hosted machine; the kubernetes
#: target serves in a cluster, so hosted runners work (the image is pushed where the cluster pulls)
_RUNNER = {
    ("github", "local"): (
        "  # {target} serves on the machine that ran deploy: every job runs on one self-hosted runner\n"
        "  # with the Docker Engine (Settings > Actions > Runners, label self-hosted)\n"
        "  runs_on: self-hosted\n"
    ),
    ("github", "cluster"): (
        "  # the cluster serves: GitHub-hosted runners work\n"
        "  runs_on: ubuntu-latest\n"
    ),
    ("gitlab", "local"): (
        "  # {target} serves on the machine that ran deploy: every job runs on one runner there, a\n"
        "  # shell-executor runner on the machine with the Docker Engine, registered with this tag\n"
        "  runner_tags: pipeline-plugin\n"
    ),
    ("gitlab", "cluster"): (
        "  # package builds the image with the Docker Engine: a runner with Docker, registered with this tag\n"
        "  runner_tags: pipeline-plugin\n"
    ),
    ("azure-devops", "local"): (
        "  # {target} serves on the machine that ran deploy: every job runs on a self-hosted agent\n"
        "  # there, in this agent pool (Organization settings > Agent pools)\n"
        "  pool: Default\n"
    ),
    ("azure-devops", "cluster"): (
        "  # the cluster serves: Microsoft-hosted agents work\n"
        "  vm_image: ubuntu-latest\n"
    ),
}

_CLUSTER = (
    "  push: true                       # the cluster pulls the image from image_repository\n"
    "  image_repository: registry.example.com/models\n"
)

RULE = """\
# Trigger rule written by `pipeline-plugin init --provider {provider} --target {target}`.
# When a new version of {model} is registered in MLflow, start the deploy pipeline
# ({pipeline_file}) through the {provider} API. Check the target below, give `serve`
# the API settings ({settings}), then remove `enabled: false`. Try it: pipeline-plugin rules explain
# --triggers {triggers} --event EVENT.json
# The jobs read from the CI system's secrets/variables: {database} (the store all jobs
# share, a postgresql:// URL), MLFLOW_TRACKING_URI (when the event does not name it) and
# MLFLOW_TRACKING_TOKEN if MLflow needs one (pipeline-plugin's docs/walkthrough.md).
name: deploy-{model_lower}
description: new {model} versions -> package, staging, smoke test, production
enabled: false
match:
  source: mlflow
  kind: model_version.created
  model: {model}
pipeline:
  provider: {dispatch}
{dispatch_target}  service: {model_lower}
  approval: true
  entry_script: score.py
  requirements: requirements.txt   # the scoring code's packages (scikit-learn for a scikit-learn model)
  sample: sample.json
  target: {target}
{runner}{cluster}{action}"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "init",
        help="write a starter CI pipeline and trigger rule into a repository",
        description=(
            "Write the deploy pipeline for a CI system (GitHub Actions: .github/workflows/deploy-model.yml, "
            "GitLab CI: .gitlab-ci.yml, Azure Pipelines: azure-pipelines/deploy-model.yml) and a trigger rule "
            "(triggers/deploy-MODEL.yml, disabled until you check it) into a repository. Existing files are "
            "kept unless --force."
        ),
    )
    parser.add_argument("--provider", required=True, choices=sorted(PROVIDERS), help="which CI system")
    parser.add_argument("--dir", default=".", metavar="REPO", help="the repository root (default: .)")
    parser.add_argument("--model", default="my-model", metavar="NAME", help="the registered model to deploy")
    parser.add_argument("--triggers", default="triggers", metavar="DIR", help="rule folder inside REPO")
    parser.add_argument(
        "--target",
        default="docker",
        choices=("docker", "process", "kubernetes"),
        help="where the model serves (default: docker). docker and process serve on the machine that ran "
        "deploy, so the jobs run on one self-hosted runner / agent; kubernetes serves in a cluster, so "
        "hosted runners work and the image is pushed to a registry",
    )
    parser.add_argument(
        "--component",
        action="store_true",
        help="GitLab: write a .gitlab-ci.yml that includes pipeline-plugin's CI/CD catalog component "
        "(include: component: $CI_SERVER_FQDN/pipeline-plugin/pipeline-plugin/deploy-model@VERSION, the rule's "
        "settings as its inputs) instead of the whole pipeline",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    output.add_json_flag(parser)
    parser.set_defaults(func=run)


def _repository_name(repo: Path) -> str:
    """owner/name from the git remote `origin`, if there is one."""
    config = repo / ".git" / "config"
    if config.is_file():
        m = re.search(r'\[remote "origin"\][^\[]*?url\s*=\s*(\S+)', config.read_text(errors="replace"))
        if m:
            path = re.sub(r"\.git$", "", m.group(1).rstrip("/"))
            path = re.split(r"[:/]", path.split("://", 1)[-1].split("@", 1)[-1], maxsplit=1)[-1]
            if re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+", path):
                return path
    return "your-org/your-repo"


def run(args: argparse.Namespace) -> int:
    render_provider, dispatch_provider = PROVIDERS[args.provider]
    if getattr(args, "component", False) and dispatch_provider != "gitlab":
        raise ConfigError(f"--component is GitLab's CI/CD catalog component; --provider {args.provider} has none "
                          "(drop --component, or use --provider gitlab)", field="--component")
    check_value("--model", args.model, "model")
    repo = Path(args.dir)
    if not repo.is_dir():
        raise ConfigError(f"--dir {str(repo)!r} is not a folder; give the repository root", field="--dir")
    model_lower = args.model.lower()
    event = ModelVersionEvent.from_dict(
        {"source": "mlflow", "kind": "model_version.created", "model": args.model, "version": "1"}
    )
    rule_path = repo / args.triggers / f"deploy-{model_lower}.yml"
    rule_text = RULE.format(
        provider=args.provider,
        dispatch=dispatch_provider,
        model=args.model,
        model_lower=model_lower,
        pipeline_file=_PIPELINE_FILE,  # in a comment: filled in once the pipeline is rendered
        triggers=args.triggers,
        settings=SETTINGS[dispatch_provider],
        dispatch_target=_TARGET[dispatch_provider].format(repository=_repository_name(repo)),
        database=DATABASE_URL_VARIABLE,
        target=args.target,
        runner=_RUNNER[dispatch_provider, "cluster" if args.target == "kubernetes" else "local"].format(target=args.target),
        cluster=_CLUSTER if args.target == "kubernetes" else "",
        action=f"  action: {ACTION_REF}   # pin @vX.Y.Z or a commit SHA to freeze it\n" if dispatch_provider == "github" else "",
    )
    # the pipeline is rendered from the rule just written, so what it says (approval: true is a
    # manual gate in GitLab, entry script, sample) is what the pipeline does
    pipeline = yaml.safe_load(rule_text)["pipeline"]
    rendered = render_pipeline(render_provider, event, f"deploy-{model_lower}", pipeline)
    if getattr(args, "component", False):
        from ..ci import gitlab_component

        rendered.text = gitlab_component.include(pipeline, f"deploy-{model_lower}", event.source)
    rule_text = rule_text.replace(_PIPELINE_FILE, str(rendered.path))
    files = {repo / rendered.path: rendered.text, rule_path: rule_text}
    existing = [str(p) for p in files if p.exists()]
    if existing and not args.force:
        raise ConfigError(f"{', '.join(existing)} already exist; pass --force to overwrite", field="--dir")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    written = [str(p) for p in files]
    output.emit(
        args,
        {"provider": args.provider, "pipeline": str(repo / rendered.path), "rule": str(rule_path), "written": written},
        "wrote " + " and ".join(written) + f"\nnext: edit {rule_path}, then `pipeline-plugin rules check {repo / args.triggers}`",
    )
    return 0
