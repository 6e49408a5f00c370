"""The GitLab and Azure jobs install the exact version that rendered them (with the extras they
need), or the build the rule pins with `install:`; never a bare, unpinned name. And
``azure-pipelines`` / ``azure-devops`` mean the same in render, rules and dispatch."""

from __future__ import annotations

import json

import pytest
import yaml

from pipeline_plugin import __version__
from pipeline_plugin.cli import main
from pipeline_plugin.errors import ConfigError
from pipeline_plugin.events import ModelVersionEvent
from pipeline_plugin.render import render_pipeline
from pipeline_plugin.rules import load_rules

EVENT = ModelVersionEvent.from_dict({"source": "mlflow", "kind": "model_version.created", "model": "iris",
                                     "version": "4", "artifact_uri": "models:/iris/4"})


def specs(provider: str, text: str) -> set[str]:
    """Every PLUGIN_SPEC the rendered jobs set, and every job step that pip-installs."""
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "PLUGIN_SPEC":
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(text))
    assert text.count("pip install") >= 1 and all('pip install --quiet "$PLUGIN_SPEC"' in line or
                                                  'pip install "$PLUGIN_SPEC"' in line
                                                  for line in text.splitlines() if "pip install" in line and not line.strip().startswith("#")), provider
    return found


@pytest.mark.parametrize("provider", ["gitlab", "azure-pipelines"])
def test_the_jobs_install_the_version_that_rendered_them(provider):
    text = render_pipeline(provider, EVENT, "deploy-iris", {"provider": provider}).text
    assert specs(provider, text) == {f"pipeline-plugin[mlflow,postgres]=={__version__}"}
    k8s = render_pipeline(provider, EVENT, "deploy-iris", {"provider": provider, "target": "kubernetes"}).text
    assert specs(provider, k8s) == {f"pipeline-plugin[kubernetes,mlflow,postgres]=={__version__}"}


@pytest.mark.parametrize("provider", ["gitlab", "azure-pipelines"])
@pytest.mark.parametrize("spec", [
    "pipeline-plugin[mlflow,postgres]==0.1.0",
    "https://files.example.com/pipeline_plugin-0.1.0-py3-none-any.whl",
    "pipeline-plugin[mlflow]@git+https://github.com/acme/pipeline-plugin.git@v0.1.0",
    "./wheels/pipeline_plugin-0.1.0-py3-none-any.whl",
])
def test_a_rule_pins_its_own_build(provider, spec):
    text = render_pipeline(provider, EVENT, "deploy-iris", {"provider": provider, "install": spec}).text
    assert specs(provider, text) == {spec}


@pytest.mark.parametrize("spec", ["pipeline-plugin", "pipeline-plugin[ci]", "pipeline-plugin>=0.1",
                                  "git+https://github.com/acme/pipeline-plugin.git"])
def test_an_unpinned_install_is_refused_at_render(spec):
    with pytest.raises(ConfigError) as info:
        render_pipeline("gitlab", EVENT, "deploy-iris", {"provider": "gitlab", "install": spec})
    assert "pipeline.install" in info.value.message and repr(spec) in info.value.message
    assert f"pipeline-plugin[mlflow,postgres]=={__version__}" in info.value.message  # the fix


RULE = """\
name: deploy-iris
match: {{source: mlflow, model: iris}}
pipeline:
  provider: {provider}
  project: models
  pipeline_id: 7
{extra}"""


def test_an_unpinned_install_fails_at_load_naming_file_line_and_fix(tmp_path):
    (tmp_path / "r.yml").write_text(RULE.format(provider="azure-devops", extra="  install: pipeline-plugin\n"))
    with pytest.raises(ConfigError) as info:
        load_rules(tmp_path)
    message = info.value.message
    assert f"{tmp_path}/r.yml:7" in message and "pipeline.install" in message and "no exact version" in message
    assert "==VERSION" in message


def test_a_pinned_install_loads(tmp_path):
    (tmp_path / "r.yml").write_text(RULE.format(provider="azure-devops",
                                                extra="  install: 'pipeline-plugin[mlflow,postgres]==0.1.0'\n"))
    [rule] = load_rules(tmp_path)
    assert rule.pipeline["install"] == "pipeline-plugin[mlflow,postgres]==0.1.0"


def test_azure_pipelines_is_the_same_provider_in_rules_render_and_dispatch(tmp_path, capsys, monkeypatch):
    (tmp_path / "r.yml").write_text(RULE.format(provider="azure-pipelines", extra=""))
    [rule] = load_rules(tmp_path)
    assert rule.pipeline["provider"] == "azure-devops"
    both = {p: render_pipeline(p, EVENT, rule.name, rule.pipeline).text for p in ("azure-devops", "azure-pipelines")}
    assert both["azure-devops"] == both["azure-pipelines"]

    event = tmp_path / "event.json"
    event.write_text(json.dumps(EVENT.to_dict()))
    out = tmp_path / "repo"
    assert main(["render", "--provider", "azure-devops", "--triggers", str(tmp_path), "--rule", rule.name,
                 "--event", str(event), "--output-dir", str(out)]) == 0
    assert (out / "azure-pipelines" / "deploy-model.yml").read_text() == both["azure-pipelines"]

    # dispatch takes either name for a rule written with either; it gets as far as the credentials
    for var in ("AZURE_DEVOPS_EXT_PAT", "SYSTEM_ACCESSTOKEN", "GITHUB_ACTIONS", "TF_BUILD", "GITLAB_CI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SYSTEM_COLLECTIONURI", "http://127.0.0.1:9/acme/")
    capsys.readouterr()
    for name in ("azure-pipelines", "azure-devops"):
        code = main(["dispatch", "--provider", name, "--triggers", str(tmp_path), "--rule", rule.name,
                     "--event", str(event)])
        err = capsys.readouterr().err
        assert code == 2 and "dispatches to" not in err and "AZURE_DEVOPS_EXT_PAT" in err, err
