"""The wheel a release publishes, installed the way a CI job installs it: `python -m build` makes the
sdist and the wheel (the wheel built from the sdist), the wheel goes into a fresh venv WITHOUT the
test extras (dependencies from the package index), and every command runs from there: each
command's --help, a real smoke-test against a tiny scoring service (its schema check needs
jsonschema), render with the packaged templates. Any import that only the test extras bring fails
here."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from pipeline_plugin import __version__
from pipeline_plugin.cli import build_parser

from .scoring_server import scoring_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("package", "deploy", "smoke-test", "promote", "rollback")
#: modules the code imports only for optional features, and the extra that brings each; anything
#: else the package imports must come with a plain install
OPTIONAL = {
    "github": "ci", "gitlab": "ci", "azure": "ci", "msrest": "ci",
    "mlflow": "mlflow", "kubernetes": "kubernetes", "boto3": "sagemaker", "botocore": "sagemaker",
    "huggingface_hub": "huggingface", "wandb": "wandb", "psycopg": "postgres",
    "inference_schema": "runtime", "numpy": "runtime",  # the scoring runtime inside model images
}
#: files shipped as they are (into model images; example models), never imported by the tool itself
IMAGE_FILES = ("/builders/scorers/", "/runtime/compat/", "/_data/")


def _run(argv: list, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend (hatchling) from this venv, so that it works offline
    proc = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh venv with only the wheel and its declared dependencies; returns its bin folder."""
    home = tmp_path_factory.mktemp("venv")
    proc = _run([sys.executable, "-m", "venv", home / "venv"])
    assert proc.returncode == 0, proc.stderr
    bin_dir = home / "venv" / "bin"
    [wheel] = dist.glob("*.whl")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = _run([bin_dir / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel],
                env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return bin_dir


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith(("GITHUB_", "PIPELINE_PLUGIN_"))
           and k not in ("TF_BUILD", "GITLAB_CI", "CI")}
    env["PIPELINE_PLUGIN_STATE_DIR"] = str(tmp_path / "state")
    return env


def test_the_sdist_and_wheel_carry_the_templates(dist):
    [sdist] = dist.glob("*.tar.gz")
    [wheel] = dist.glob("*.whl")
    assert wheel.name == f"pipeline_plugin-{__version__}-py3-none-any.whl"
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert any(n.endswith("/templates/gitlab/deploy-model.gitlab-ci.yml.j2") for n in names)
    assert any(n.endswith("/pyproject.toml") for n in names)
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
    for template in ("github/deploy-model.yml.j2", "gitlab/deploy-model.gitlab-ci.yml.j2",
                     "azure-pipelines/deploy-model.yml.j2", "docker/Dockerfile.j2"):
        assert f"pipeline_plugin/_data/templates/{template}" in files
    assert not any(name.startswith("tests/") for name in files)


def test_every_command_starts_from_the_wheel(venv, tmp_path):
    cli = venv / "pipeline-plugin"
    where = _run([venv / "python", "-c", "import pipeline_plugin; print(pipeline_plugin.__file__)"], cwd=tmp_path)
    assert str(venv.parent) in where.stdout, where.stdout + where.stderr  # the installed copy, not the checkout
    proc = _run([cli, "--version"], cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 0 and __version__ in proc.stdout, proc.stderr
    commands = sorted(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001
    assert set(STAGES) <= set(commands)
    for command in commands:
        proc = _run([cli, command, "--help"], cwd=tmp_path, env=_env(tmp_path), timeout=120)
        assert proc.returncode == 0 and "usage:" in proc.stdout, (command, proc.stderr[-2000:])


def test_every_import_is_declared(venv, tmp_path):
    """Each third-party module the installed package imports (anywhere, also inside functions) is
    importable after a plain install, or belongs to an optional feature whose extra is declared."""
    script = f"""
import ast, importlib.metadata as md, importlib.util, json, pathlib, sys
import pipeline_plugin
root = pathlib.Path(pipeline_plugin.__file__).parent
optional = {OPTIONAL!r}
extras = set(md.metadata("pipeline-plugin").get_all("Provides-Extra") or [])
problems = []
for f in sorted(root.rglob("*.py")):
    if any(part in "/" + str(f.relative_to(root.parent)) for part in {IMAGE_FILES!r}):
        continue
    for node in ast.walk(ast.parse(f.read_text())):
        mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        for mod in mods:
            top = mod.split(".")[0]
            if top in sys.stdlib_module_names or top == "pipeline_plugin":
                continue
            if importlib.util.find_spec(top) is not None:
                continue
            if optional.get(top) in extras:
                continue
            problems.append(f"{{f.relative_to(root.parent)}}:{{node.lineno}}: {{mod}}")
print(json.dumps(problems))
"""
    proc = _run([venv / "python", "-c", script], cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [], "imports a plain install lacks (declare them or give them an extra)"


def test_a_real_smoke_test_runs_from_the_wheel(venv, tmp_path):
    sample = tmp_path / "sample.json"
    sample.write_text("[[1, 2], [3, 4]]")
    expect = tmp_path / "expect.json"
    expect.write_text(json.dumps({"result": [3.0, 7.0]}))
    with scoring_server() as url:
        proc = _run([venv / "pipeline-plugin", "smoke-test", "--url", url, "--sample", sample, "--expect", expect,
                     "--requests", "5", "--json"], cwd=tmp_path, env=_env(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["passed"] is True
    assert checks["schema"]["passed"] and not checks["schema"].get("skipped"), checks["schema"]  # jsonschema ran


def test_render_uses_the_packaged_templates_and_pins_its_own_version(venv, tmp_path):
    triggers = tmp_path / "triggers"
    triggers.mkdir()
    (triggers / "iris.yml").write_text(
        "name: deploy-iris\nmatch: {source: mlflow, model: iris}\n"
        "pipeline: {provider: gitlab, project: acme/models, service: iris}\n")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"source": "mlflow", "kind": "model_version.created", "model": "iris", "version": "4",
                                 "artifact_uri": "models:/iris/4"}))
    for provider, path in (("gitlab", ".gitlab-ci.yml"), ("azure-pipelines", "azure-pipelines/deploy-model.yml"),
                           ("github", ".github/workflows/deploy-model.yml")):
        out = tmp_path / provider
        proc = _run([venv / "pipeline-plugin", "render", "--provider", provider, "--triggers", triggers, "--rule",
                     "deploy-iris", "--event", event, "--output-dir", out], cwd=tmp_path, env=_env(tmp_path))
        assert proc.returncode == 0, proc.stderr
        text = (out / path).read_text()
        assert f"pipeline-plugin {__version__}" in text
        if provider != "github":
            assert f'PLUGIN_SPEC: "pipeline-plugin[mlflow,postgres]=={__version__}"' in text


def test_init_component_reads_the_packaged_gitlab_component(venv, tmp_path):
    """`init --provider gitlab --component` from the wheel: the component's defaults come from the
    copy of templates/deploy-model.yml the wheel ships, so only the rule's own settings are written."""
    repo = tmp_path / "repo"
    repo.mkdir()
    proc = _run([venv / "pipeline-plugin", "init", "--provider", "gitlab", "--component", "--dir", repo, "--model", "Iris"],
                cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    [item] = yaml.safe_load((repo / ".gitlab-ci.yml").read_text())["include"]
    assert item["component"].endswith(f"/deploy-model@{__version__}")
    assert "install" not in item["inputs"] and item["inputs"]["service"] == "iris"
