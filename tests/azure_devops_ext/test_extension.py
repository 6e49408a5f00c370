"""The extension's manifests: every task.json passes tfx-cli's own task validation (the check
`tfx build tasks upload` runs, from the tfx-cli that scripts/setup.sh installs), the .vsix
that `tfx extension create` makes (offline) holds every task with what the agent runs, and the
tasks' versions pin the tool they install."""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
import zipfile

import pytest

from pipeline_plugin import __version__
from tests.azure_devops_ext.conftest import EXT, MANIFEST, TASKS

STAGE_TASKS = {"PipelinePluginPackage", "PipelinePluginDeploy", "PipelinePluginSmokeTest", "PipelinePluginPromote",
               "PipelinePluginRollback", "PipelinePluginDelete", "PipelinePluginApprove"}
SECRET_INPUTS = {"databaseUrl", "scoringKey", "registryToken"}


def task_json(name: str) -> dict:
    return json.loads((EXT / "tasks" / name / "task.json").read_text())


def test_the_extension_has_one_task_per_stage():
    assert set(TASKS) == STAGE_TASKS
    assert sorted(p.name for p in (EXT / "tasks").iterdir()) == sorted(TASKS)


def tfx_validate(path) -> subprocess.CompletedProcess:
    """tfx-cli's validation of a task.json (lib/jsonvalidate.js: id, name, friendlyName,
    instanceNameFormat, execution handlers and their targets), run as `tfx build tasks upload` runs it."""
    from tests.azure_devops_ext.conftest import TOOLS

    script = "require(process.argv[1]).validate(process.argv[2]); console.log('valid')"
    return subprocess.run(["node", "-e", script, str(TOOLS / "tfx-cli" / "_build" / "lib" / "jsonvalidate.js"), str(path)],
                          capture_output=True, text=True, timeout=60)


def test_tfx_validation_refuses_a_broken_task_json(tmp_path):
    """The check below can fail: a task.json with a bad id and a 41-character friendlyName is refused."""
    folder = tmp_path / "Broken"
    folder.mkdir()
    doc = task_json("PipelinePluginDeploy") | {"id": "not-a-guid", "friendlyName": "x" * 41}
    (folder / "task.json").write_text(json.dumps(doc))
    (folder / "index.js").write_text("")
    proc = tfx_validate(folder / "task.json")
    assert proc.returncode != 0
    assert "id is a required guid" in proc.stderr and "friendlyName is a required string" in proc.stderr


@pytest.mark.parametrize("name", sorted(STAGE_TASKS))
def test_task_json_passes_tfx_task_validation(name):
    doc = task_json(name)
    proc = tfx_validate(EXT / "tasks" / name / "task.json")
    assert proc.returncode == 0 and "valid" in proc.stdout, proc.stderr
    assert doc["name"] == name and doc["execution"] == {"Node20_1": {"target": "index.js", "argumentFormat": ""}}
    groups = {g["name"] for g in doc["groups"]}
    names = [i["name"] for i in doc["inputs"]]
    assert len(names) == len(set(names)), f"{name}: duplicate inputs"
    for inp in doc["inputs"]:
        assert inp.get("helpMarkDown"), f"{name}.{inp['name']} has no help text"
        assert inp.get("groupName") in groups, f"{name}.{inp['name']} is in no declared group"
        if inp["name"] in SECRET_INPUTS:
            assert "secret variable" in inp["helpMarkDown"], f"{name}.{inp['name']}: say to map a secret variable"
    # every input the handler reads is declared (and the other way round), so the UI offers each one
    # (the shared module reads the store and install inputs each task may declare)
    source = (EXT / "tasks" / name / "index.js").read_text()
    common = (EXT / "common" / "pipeline-plugin-common.js").read_text()
    pattern = r"(?:input|secretInput|getBoolInput|getPathInput|getInput)\('([A-Za-z0-9]+)'"
    read = set(re.findall(pattern, source))
    assert read - set(names) == set(), f"{name}: index.js reads undeclared inputs {read - set(names)}"
    ignored = set(names) - read - set(re.findall(pattern, common))
    assert ignored == set(), f"{name}: task.json declares inputs the handler ignores {ignored}"
    outputs = {o["name"] for o in doc["outputVariables"]}
    set_in_js = set(re.findall(r"setOutputs\(\{([^}]*)\}", source)[0].replace(" ", "").split(",")) if "setOutputs({" in source else set()
    assert {k.split(":")[0] for k in set_in_js if k} == outputs, f"{name}: output variables declared {outputs}, set {set_in_js}"


def test_versions_pin_the_tool():
    """The task installs pipeline-plugin==its version: extension, tasks and the package agree."""
    assert MANIFEST["version"] == __version__
    for name in TASKS:
        v = task_json(name)["version"]
        assert f"{v['Major']}.{v['Minor']}.{v['Patch']}" == __version__, name


def test_stage_outputs_are_declared():
    assert {o["name"] for o in task_json("PipelinePluginPackage")["outputVariables"]} == {"image", "digest"}
    for name in ("PipelinePluginDeploy", "PipelinePluginPromote", "PipelinePluginRollback"):
        assert {"scoringUri", "image", "digest"} <= {o["name"] for o in task_json(name)["outputVariables"]}


def test_the_service_connection_type_holds_the_mlflow_url_and_a_confidential_token():
    [endpoint] = [c for c in MANIFEST["contributions"] if c["type"] == "ms.vss-endpoint.service-endpoint-type"]
    props = endpoint["properties"]
    assert endpoint["targets"] == ["ms.vss-endpoint.endpoint-types"] and props["name"] == "pipeline-plugin-mlflow"
    [token] = [s for s in props["authenticationSchemes"] if s["type"] == "ms.vss-endpoint.endpoint-auth-scheme-token"]
    [apitoken] = token["inputDescriptors"]
    assert apitoken["id"] == "apitoken" and apitoken["isConfidential"] is True
    users = [n for n in TASKS if any(i["type"] == "connectedService:pipeline-plugin-mlflow" for i in task_json(n)["inputs"])]
    assert {"PipelinePluginPackage", "PipelinePluginPromote", "PipelinePluginRollback"} <= set(users)


def test_tfx_packages_every_task_with_what_the_agent_runs(vsix, unpacked):
    names = set(zipfile.ZipFile(vsix).namelist())
    for task in TASKS:
        for file in ("task.json", "index.js", "pipeline-plugin-common.js", "package.json", "icon.png",
                     "node_modules/azure-pipelines-task-lib/task.js"):
            assert f"tasks/{task}/{file}" in names, f"{file} of {task} is not in the .vsix"
    manifest = ET.parse(unpacked / "extension.vsixmanifest").getroot()
    ns = {"v": "http://schemas.microsoft.com/developer/vsx-schema/2011"}
    identity = manifest.find("v:Metadata/v:Identity", ns)
    assert identity.get("Version") == __version__ and identity.get("Id") == "pipeline-plugin"
    # each unpacked task loads its task library and shared module under node, alone
    for task in TASKS:
        proc = subprocess.run(["node", "-e", "require('./pipeline-plugin-common.js')"], cwd=unpacked / "tasks" / task,
                              capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin:/usr/local/bin",
                                                                            "AGENT_TEMPDIRECTORY": str(unpacked)})
        assert proc.returncode == 0, proc.stderr


def test_the_classic_release_uses_the_tasks_with_their_inputs_and_is_started_by_dispatch():
    """docs/azure-devops/classic-release.json: Staging (package, deploy, smoke test) -> approval ->
    Production (promote, rollback on failure); no artifact trigger; the release variables dispatch
    sets are settable at release time; every task input exists and every required one is given."""
    from pipeline_plugin.render import INPUT_VARIABLES

    doc = json.loads((EXT.parents[1] / "docs" / "azure-devops" / "classic-release.json").read_text())
    by_id = {task_json(n)["id"]: task_json(n) for n in TASKS}
    assert doc["triggers"] == [] and not any(a.get("definitionReference", {}).get("triggers") for a in doc["artifacts"])
    for name in INPUT_VARIABLES.values():
        assert doc["variables"][name].get("allowOverride") is True, f"{name} is not settable at release time"
    for secret in ("PIPELINE_PLUGIN_DATABASE_URL", "REGISTRY_TOKEN", "STAGING_SCORING_KEY", "PRODUCTION_SCORING_KEY"):
        assert doc["variables"][secret] == {"value": None, "isSecret": True}
    staging, production = sorted(doc["environments"], key=lambda e: e["rank"])
    assert staging["conditions"] == [{"name": "ReleaseStarted", "conditionType": "event", "value": ""}]
    assert production["conditions"] == [{"name": staging["name"], "conditionType": "environmentState", "value": "4"}]
    assert [a["isAutomated"] for a in production["preDeployApprovals"]["approvals"]] == [False]
    used = {}
    for env in (staging, production):
        for phase in env["deployPhases"]:
            for step in phase["workflowTasks"]:
                if step["taskId"] not in by_id:
                    continue  # Azure's own UsePythonVersion
                meta = by_id[step["taskId"]]
                used.setdefault(env["name"], []).append(meta["name"])
                declared = {i["name"]: i for i in meta["inputs"]}
                assert set(step["inputs"]) <= set(declared), f"{meta['name']}: unknown inputs {set(step['inputs']) - set(declared)}"
                for inp in declared.values():
                    if inp["required"]:
                        assert step["inputs"].get(inp["name"]), f"{meta['name']} lacks the required input {inp['name']}"
                for secret in SECRET_INPUTS & set(step["inputs"]):
                    assert re.fullmatch(r"\$\([A-Z_]+\)", step["inputs"][secret]), f"{meta['name']}.{secret} is not a variable"
                    assert doc["variables"][step["inputs"][secret][2:-1]].get("isSecret") is True
    assert used == {"Staging": ["PipelinePluginPackage", "PipelinePluginDeploy", "PipelinePluginSmokeTest"],
                    "Production": ["PipelinePluginPromote", "PipelinePluginRollback"]}
    [rollback] = [s for s in production["deployPhases"][0]["workflowTasks"] if s["refName"] == "Rollback"]
    assert rollback["condition"] == "failed()" and rollback["inputs"]["ifServing"] == "$(MODEL_VERSION)"


def test_build_refuses_a_task_library_other_than_the_pinned_one(tmp_path):
    """Each task ships exactly the azure-pipelines-task-lib its package.json pins: another version in
    the node_modules build.js copies from is a clear error (exit 2), not a silently different task."""
    import shutil

    from tests.azure_devops_ext.conftest import TOOLS

    src = tmp_path / "ext"
    shutil.copytree(EXT, src)
    pkg = src / "tasks" / "PipelinePluginDelete" / "package.json"
    doc = json.loads(pkg.read_text())
    doc["dependencies"]["azure-pipelines-task-lib"] = "5.0.0"
    pkg.write_text(json.dumps(doc))
    proc = subprocess.run(["node", str(src / "build.js"), "--out", str(tmp_path / "out"), "--node-modules", str(TOOLS)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "tasks/PipelinePluginDelete pins azure-pipelines-task-lib@5.0.0 but" in proc.stderr
    assert "run scripts/setup.sh" in proc.stderr
