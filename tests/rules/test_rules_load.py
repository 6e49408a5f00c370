"""Loading: the rule files users write, and every way one can fail to load (file, line, field,
message and suggestion), plus the pipeline section per provider."""

from __future__ import annotations

import pytest

from pipeline_plugin.errors import ConfigError
from pipeline_plugin.rules import check_rules, load_rules

from .helpers import write

# (file text, line, field, message part, suggestion part)
ERRORS = [
    (
        """
        name: churn
        match:
          kind: model_version.created
          modle: "churn-*"
        """,
        4, "match.modle", "unknown key 'modle' in match", "did you mean 'model'?",
    ),
    ("name: a\nmatch: {}\npipelin: {provider: local}\n", 3, "pipelin", "unknown key 'pipelin' in rule",
     "did you mean 'pipeline'?"),
    ("name: a\nmatch:\n  source: mlflw\n", 3, "match.source", "unknown source 'mlflw'", "did you mean 'mlflow'?"),
    ("name: a\nmatch:\n  kind: model_version.creatd\n", 3, "match.kind", "unknown kind 'model_version.creatd'",
     "did you mean 'model_version.created'?"),
    ("name: a\nmatch:\n  kind: nothing.*\n", 3, "match.kind", "unknown kind 'nothing.*'", "valid kinds: alias.deleted"),
    ("name: a\nmatch:\n  model: 'churn-[ab'\n", 3, "match.model", "unclosed '[' in glob 'churn-[ab'", None),
    ("name: a\nmatch:\n  model: ''\n", 3, "match.model", "empty pattern", None),
    ("name: a\nmatch:\n  model: []\n", 3, "match.model", "match.model is an empty list", "remove the key"),
    ("name: a\nmatch:\n  model: {a: b}\n", 3, "match.model", "must be a string or a list of strings", None),
    ("name: a\nmatch:\n  alias: yes\n", 3, "match.alias", "must be a string or a list of strings, got True",
     'quote it: alias: "True"'),
    ("name: a\nmatch:\n  version: '=>3'\n", 3, "match.version", "bad version expression '=>3'", "did you mean '>=3'?"),
    ("name: a\nmatch:\n  version: '>=abc'\n", 3, "match.version", ">= needs a numeric version", None),
    ("name: a\nmatch:\n  version: '>=3,'\n", 3, "match.version", "has no version after '=='", None),
    ("name: a\nmatch:\n  version: '>='\n", 3, "match.version", "comparison '>=' has no version", None),
    ("name: a\nmatch:\n  version: '>=3,latest'\n", 3, "match.version", "'latest' cannot be combined", "alone"),
    ("name: a\nmatch:\n  version: 'v1,v2'\n", 3, "match.version", "equal to two values", "a glob ('v1.*')"),
    ("name: a\nmatch:\n  version: '>=v1*'\n", 3, "match.version", ">= needs a numeric version", None),
    ("name: a\nmatch:\n  version: 1.10\n", 3, "match.version", "1.10 is read by YAML as the number 1.1",
     'quote it: version: "1.10"'),
    ("name: a\nmatch:\n  version: [1, 2]\n", 3, "match.version", "must be a string like '>=3' or 'latest'", None),
    ("name: a\nmatch:\n  tags: candidate\n", 3, "match.tags", "must be a mapping", "e.g. tags: {stage_hint: candidate}"),
    ("name: a\nmatch:\n  tags:\n    stage_hint:\n", 4, "match.tags.stage_hint", "has no value", "use '*'"),
    ("name: a\nmatch:\n  registry:\n    workspce: x\n", 4, "match.registry.workspce",
     "unknown key 'workspce' in match.registry", "did you mean 'workspace'?"),
    ("name: a\nmatch:\n  exclude:\n    exclude: {model: x}\n", 4, "match.exclude.exclude",
     "unknown key 'exclude' in match.exclude", None),
    ("name: a\nmatch:\n  exclude: {}\n", 3, "match.exclude", "would exclude every event", "add conditions"),
    ("name: a\nmatch:\n  exclude:\n    - {modl: x}\n", 4, "match.exclude[0].modl", "unknown key 'modl'",
     "did you mean 'model'?"),
    ("name: a\nmatch:\n  model: a\n  model: b\n", 4, "match.model", "duplicate key 'model' in match (first on line 3)",
     "keep one"),
    ("name: a\nmatch: churn-*\n", 2, "match", "match must be a mapping of conditions", None),
    ("name: a\n", 1, "match", "has no match block", "match: {} to match every event"),
    ("name: a\nmatch:\n", 2, "match", "match is empty", "write match: {} to match every event"),
    ("name: a\nmatch:\n  exclude:\n", 3, "match.exclude", "match.exclude has no conditions", "remove it"),
    ("match: {}\n", 1, "name", "has no name", "add name:"),
    ("name: 'churn to prod'\nmatch: {}\n", 1, "name", "rule name 'churn to prod' is not valid", "e.g. 'churn-to-production'"),
    ("name: off\nmatch: {}\n", 1, "name", "rule name off is read by YAML as False", 'quote it: name: "off"'),
    ("name: a\nenabled: 'no'\nmatch: {}\n", 2, "enabled", "enabled must be true or false, got 'no'", None),
    ("name: a\nmatch: {}\npipeline:\n", 3, "pipeline", "pipeline is empty", "remove pipeline:"),
    ("name: a\nmatch: {}\npipeline: local\n", 3, "pipeline", "pipeline must be a mapping with a provider", None),
    ("name: a\nmatch: {}\npipeline:\n  service: x\n", 4, "pipeline.provider", "pipeline has no provider",
     "add provider: local | github | gitlab | azure-devops"),
    ("name: a\nmatch: {}\npipeline:\n  provider: githb\n", 4, "pipeline.provider", "unknown provider 'githb'",
     "did you mean 'github'?"),
    ("name: a\nmatch: {}\npipeline:\n  provider: jenkins\n", 4, "pipeline.provider", "unknown provider 'jenkins'",
     "valid providers: azure-devops, github, gitlab, local"),
    ("name: a\nmatch: {}\npipeline:\n  provider: github\n  repository: acme/x\n", 4, "pipeline.workflow",
     "pipeline for provider github needs 'workflow'", "add workflow:"),
    ("name: a\nmatch: {}\npipeline:\n  provider: github\n  workflow: d.yml\n", 4, "pipeline.repository",
     "needs 'repository'", None),
    ("name: a\nmatch: {}\npipeline:\n  provider: github\n  repository: acme\n  workflow: d.yml\n", 5,
     "pipeline.repository", "pipeline.repository: must be 'owner/name', got 'acme'", "e.g. 'acme/churn-model'"),
    ("name: a\nmatch: {}\npipeline:\n  provider: github\n  repository: a/b\n  workflow: d.yml\n"
     "  runs_on: 'ubuntu; curl x|sh'\n", 7, "pipeline.runs_on",
     "pipeline.runs_on: 'ubuntu; curl x|sh' cannot go into a rendered CI pipeline: it must match", None),
    ("name: a\nmatch: {}\npipeline:\n  provider: gitlab\n  project: g/p\n  vm_image: ubuntu-latest\n", 6,
     "pipeline.vm_image", "unknown key 'vm_image' in pipeline (provider gitlab)", None),
    ("name: a\nmatch: {}\npipeline:\n  provider: gitlab\n  project: g/p\n  forward_tags: stage_hint\n", 6,
     "pipeline.forward_tags", "must be a list of tag names", "e.g. forward_tags: [stage_hint, git_sha]"),
    ("name: a\nmatch: {}\npipeline:\n  provider: azure-devops\n  project: p\n  pipeline_id: 1\n"
     "  entry_script: '$(curl x)'\n", 7, "pipeline.entry_script", "cannot go into a rendered CI pipeline", None),
    ("name: a\nmatch: {}\npipeline:\n  provider: github\n  repository: a/b\n  workflow: d.yml\n  mode: dispatch\n", 7,
     "pipeline.mode", "must be one of workflow_dispatch, repository_dispatch", None),
    ("name: a\nmatch: {}\npipeline:\n  provider: github\n  repository: a/b\n  workflow: d.yml\n  inputs: {a: [1]}\n", 7,
     "pipeline.inputs", "value of 'a' must be a string, number or boolean", None),
    ("name: a\nmatch: {}\npipeline:\n  provider: github\n  repository: a/b\n  workflw: d.yml\n", 6,
     "pipeline.workflw", "unknown key 'workflw' in pipeline (provider github)", "did you mean 'workflow'?"),
    ("name: a\nmatch: {}\npipeline:\n  provider: gitlab\n  project: g/p\n  trigger_token: glptt-123\n", 6,
     "pipeline.trigger_token", "unknown key 'trigger_token'", "did you mean 'trigger_token_env'?"),
    ("name: a\nmatch: {}\npipeline:\n  provider: gitlab\n  project: g/p\n  trigger_token_env: glptt-123\n", 6,
     "pipeline.trigger_token_env", "must name an environment variable", "never put a token in a rule file"),
    ("name: a\nmatch: {}\npipeline:\n  provider: gitlab\n  ref: main\n", 4, "pipeline.project", "needs 'project'", None),
    ("name: a\nmatch: {}\npipeline:\n  provider: gitlab\n  project: g/p\n  ref: 'main; rm'\n", 6, "pipeline.ref",
     "must be a branch or tag name", "e.g. ref: main"),
    ("name: a\nmatch: {}\npipeline:\n  provider: gitlab\n  project: g/p\n  url: https://gitlab.example.com\n", 6,
     "pipeline.url", "unknown key 'url' in pipeline (provider gitlab)", "CI_SERVER_URL in serve's environment"),
    ("name: a\nmatch: {}\npipeline:\n  provider: github\n  repository: a/b\n  workflow: d.yml\n  token: ghp_x\n", 7,
     "pipeline.token", "unknown key 'token'", "never put a token in a rule file"),
    ("name: a\nmatch: {}\npipeline:\n  provider: azure-devops\n  project: p\n", 4, "pipeline.pipeline_id",
     "needs 'pipeline_id'", "release_definition_id"),
    ("name: a\nmatch: {}\npipeline:\n  provider: azure-devops\n  project: p\n  pipeline_id: 0\n", 6,
     "pipeline.pipeline_id", "must be a positive integer", None),
    ("name: a\nmatch: {}\npipeline:\n  provider: azure-devops\n  project: p\n  pipeline_id: 1\n"
     "  release_definition_id: 2\n", 7, "pipeline.release_definition_id", "both pipeline_id and release_definition_id",
     "keep one"),
    ("name: a\nmatch: {}\npipeline:\n  provider: local\n  target: dockr\n", 5, "pipeline.target",
     "pipeline.target: must be one of", "did you mean 'docker'?"),
    ("name: a\nmatch: {}\npipeline:\n  provider: local\n  staging_port: 99999\n", 5, "pipeline.staging_port",
     "must be a port number 1-65535, got 99999", None),
    ("name: a\nmatch: {}\npipeline:\n  provider: local\n  staging_port: 8080\n  production_port: 8080\n", 6,
     "pipeline.production_port", "staging_port and production_port are both 8080", "use two different ports"),
    ("name: a\nmatch: {}\npipeline:\n  provider: local\n  strategy: blue_green\n", 5, "pipeline.strategy",
     "must be one of blue-green, canary", "did you mean 'blue-green'?"),
    ("name: a\nmatch: {}\npipeline:\n  provider: local\n  tolerance: -1\n", 5, "pipeline.tolerance",
     "must be a number >= 0", None),
    ("name: a\nmatch: {}\npipeline:\n  provider: local\n  approval: 'yes'\n", 5, "pipeline.approval",
     "must be true or false", None),
    ("name: a\nmatch: {}\npipeline:\n  provider: local\n  service: Churn_Model\n", 5, "pipeline.service",
     "service name 'Churn_Model' is not valid", "e.g. 'churn-model'"),
    ("name: a\nmatch: {}\npipeline:\n  provider: local\n  entry_script: scor.py\n", 5, "pipeline.entry_script",
     "file 'scor.py' does not exist", "did you mean 'score.py'?"),
    ("name: a\nmatch: {}\npipeline:\n  provider: local\n  source_dir: score.py\n", 5, "pipeline.source_dir",
     "'score.py' is not a folder", None),
    ("name: a\nmatch: {\n", 3, None, "YAML syntax error", "check indentation"),
    ("", 1, None, "rule file is empty", "one rule (a mapping) or a list"),
    ("[]\n", 1, None, "empty list", None),
    ("- name: a\n  match: {}\n- just text\n", 3, None, "rule[1] must be a mapping", None),
]


@pytest.mark.parametrize("text,line,field,message,suggestion", ERRORS)
def test_load_error_names_file_line_field_and_fix(tmp_path, text, line, field, message, suggestion):
    folder = tmp_path / "triggers"
    folder.mkdir()
    (folder / "score.py").write_text("")  # a real file for the path checks to suggest
    import textwrap

    path = write(folder, "rule.yml", textwrap.dedent(text) if text.startswith("\n") else text)
    _, errors = check_rules(folder)
    found = [e for e in errors if (e.file, e.line, e.field) == (str(path), line, field)]
    assert found, "no error at the expected place; got: " + "; ".join(str(e) for e in errors)
    error = found[0]
    assert message in error.message, str(error)
    if suggestion:
        assert suggestion in (error.suggestion or ""), str(error)
    assert str(error).startswith(f"{path}:{line}: ")
    # load_rules raises the same thing as a ConfigError (exit code 2)
    with pytest.raises(ConfigError) as info:
        load_rules(folder)
    assert str(error) in info.value.message
    assert info.value.exit_code == 2


def test_the_issue_example_message(tmp_path):
    folder = tmp_path / "triggers"
    folder.mkdir()
    write(folder, "churn.yml", """
        name: churn-to-production
        match:
          kind: model_version.created
          modle: "churn-*"
    """)
    with pytest.raises(ConfigError) as info:
        load_rules(folder)
    assert info.value.message == f"{folder}/churn.yml:4: unknown key 'modle' in match; did you mean 'model'?"
    assert info.value.details["line"] == 4 and info.value.details["field"] == "match.modle"


def test_every_error_in_every_file_is_reported(tmp_path):
    write(tmp_path, "a.yml", "name: a\nmatch:\n  modle: x\n  source: mlflw\n")
    write(tmp_path, "b.yaml", "- name: b\n  match: {version: '=>1'}\n- name: c\n  match: {}\n  pipeline: {provider: x}\n")
    write(tmp_path, "ok.yml", "name: fine\nmatch: {}\n")
    rules, errors = check_rules(tmp_path)
    assert [r.name for r in rules] == ["fine"]  # the rules that load are still returned
    assert [(e.file.rsplit("/", 1)[1], e.line, e.field) for e in errors] == [
        ("a.yml", 3, "match.modle"),
        ("a.yml", 4, "match.source"),
        ("b.yaml", 2, "match.version"),
        ("b.yaml", 5, "pipeline.provider"),
    ]
    with pytest.raises(ConfigError) as info:
        load_rules(tmp_path)
    assert info.value.message.startswith("4 errors in trigger rules:\n")
    assert len(info.value.details["errors"]) == 4


def test_duplicate_rule_names_across_files(tmp_path):
    write(tmp_path, "a.yml", "name: churn\nmatch: {}\n")
    write(tmp_path, "b.yml", "# second\n- name: other\n  match: {}\n- name: churn\n  match: {}\n")
    rules, errors = check_rules(tmp_path)
    assert [r.name for r in rules] == ["churn", "other"]
    (error,) = errors
    assert (error.file, error.line, error.field) == (str(tmp_path / "b.yml"), 4, "name")
    assert f"duplicate rule name 'churn' (first defined at {tmp_path / 'a.yml'}:1)" in error.message
    assert "rename one" in error.suggestion


def test_folder_rules(tmp_path):
    with pytest.raises(ConfigError, match="trigger folder .* does not exist"):
        load_rules(tmp_path / "missing")
    (tmp_path / "file.yml").write_text("name: a\nmatch: {}\n")
    with pytest.raises(ConfigError, match="is not a folder"):
        load_rules(tmp_path / "file.yml")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("not a rule")
    (empty / ".hidden.yml").write_text("not: [valid")
    assert load_rules(empty) == []
    (empty / "Upper.YAML").write_text("name: upper\nmatch: {}\n")
    assert [r.name for r in load_rules(empty)] == ["upper"]


def test_a_loaded_rule(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "score.py").write_text("def run(data): return data\n")
    path = write(tmp_path, "churn.yaml", """
        # header comment
        name: churn-to-production
        description: deploy churn models
        match:
          source: mlflow
          kind: [model_version.created, alias.set]
          model: "churn-*"
          version: ">=3"
          tags: {stage_hint: candidate, validated: true}
        pipeline:
          provider: local
          entry_script: model/score.py
          source_dir: model
          tolerance: 0.01
          staging_port: 8001
          production_port: 8002
          approval: false
          target: process
    """)
    (rule,) = load_rules(tmp_path)
    assert rule.name == "churn-to-production"
    assert (rule.file, rule.line, rule.directory) == (path, 2, tmp_path)
    assert rule.enabled and rule.description == "deploy churn models"
    assert rule.provider == "local"
    # the pipeline section is plain data, exactly as written (relative paths resolve in rule.directory)
    assert rule.pipeline == {
        "provider": "local", "entry_script": "model/score.py", "source_dir": "model", "tolerance": 0.01,
        "staging_port": 8001, "production_port": 8002, "approval": False, "target": "process",
    }
    assert type(rule.pipeline) is dict
    assert rule.match.kind == ("model_version.created", "alias.set")
    assert dict(rule.match.tags) == {"stage_hint": "candidate", "validated": "true"}
    d = rule.to_dict()
    assert d["match"]["version"] == ">=3" and d["provider"] == "local" and d["line"] == 2
    import json

    json.dumps(d)  # what `rules check --json` prints


def test_rule_without_pipeline_and_every_provider(tmp_path):
    write(tmp_path, "rules.yml", """
        - name: record-only
          match: {model: "x-*"}
        - name: gh
          match: {}
          pipeline: {provider: github, repository: a/b, workflow: 1234, inputs: {env: staging, n: 2, ok: true}}
        - name: gh-repo-dispatch
          match: {}
          pipeline: {provider: github, repository: a/b, mode: repository_dispatch, runs_on: self-hosted,
                     entry_script: model/score.py, sample: model/sample.json, forward_tags: [stage_hint]}
        - name: gl
          match: {}
          pipeline: {provider: gitlab, project: 42, ref: release/v2, variables: {A_B: c}}
        - name: ado
          match: {}
          pipeline: {provider: azure-devops, project: p, release_definition_id: 3, artifact_alias: _model,
                     artifact_version: 'tag:build_id', ref: main}
        - name: disabled
          enabled: false
          match: {}
          pipeline: {provider: gitlab, project: g/p}
    """)
    rules = load_rules(tmp_path)
    assert [(r.name, r.provider, r.enabled) for r in rules] == [
        ("record-only", None, True), ("gh", "github", True), ("gh-repo-dispatch", "github", True),
        ("gl", "gitlab", True), ("ado", "azure-devops", True), ("disabled", "gitlab", False),
    ]
    assert rules[0].pipeline is None
    assert [r.line for r in rules] == [1, 3, 6, 10, 13, 17]


def test_yaml_anchors_and_merge_keys(tmp_path):
    """Shared settings through `<<: *anchor`; a key written next to the merge overrides it."""
    write(tmp_path, "rules.yml", """
        - name: base
          match: &churn {source: mlflow, model: "churn-*", version: ">=1"}
        - name: strict
          match:
            <<: *churn
            version: ">=3"
    """)
    base, strict = load_rules(tmp_path)
    assert strict.match.model == ("churn-*",) and strict.match.source == ("mlflow",)
    assert strict.match.version.text == ">=3" and base.match.version.text == ">=1"
