"""`pipeline-plugin deploy` end to end: real Docker, real nginx, the real CLI process."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from pipeline_plugin.history import History
from pipeline_plugin.targets.docker import DockerTarget
from pipeline_plugin.targets.process import ProcessTarget
from tests.conftest import unused_port

from .test_process_target import package_dir


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pipeline_plugin.cli", "deploy", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def score(uri, key=None):
    req = urllib.request.Request(uri, data=json.dumps({"data": [1]}).encode(), headers={"Content-Type": "application/json"})
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_deploy_json_on_docker_with_a_config_file(app_images, service, state_dir, tmp_path, docker_client):
    port = unused_port()
    config = tmp_path / "deploymentconfig.json"
    config.write_text(json.dumps({"containerResourceRequirements": {"cpu": 0.25, "memoryInGB": 0.5},
                                  "environmentVariables": {"APP_MODE": "test"}, "keys": ["cli-key"]}))
    base = ["--name", service, "--env", "staging", "--target", "docker", "--port", str(port), "--config", str(config),
            "--state-dir", str(state_dir), "--json"]
    try:
        out = cli("--image", app_images["1"], *base)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["scoring_uri"] == f"http://127.0.0.1:{port}/score"
        assert data["swagger_uri"] == f"http://127.0.0.1:{port}/swagger.json"
        assert (data["image"], data["env"], data["model"], data["version"]) == (app_images["1"], "staging", "test-model", "1")
        assert data["image_id"] == docker_client.images.get(app_images["1"]).id
        assert "cli-key" not in out.stdout + out.stderr
        assert "ready" in out.stderr  # progress, on stderr
        assert score(data["scoring_uri"], "cli-key")["version"] == "1"
        host = docker_client.containers.get(data["details"]["container_id"]).attrs["HostConfig"]
        assert (host["NanoCpus"], host["Memory"]) == (250_000_000, 512 * 1024**2)

        again = cli("--image", app_images["2"], *base)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["version"] == "2" and score(data["scoring_uri"], "cli-key")["version"] == "2"
        recorded = History(state_dir).records(service=service, action="deploy")
        assert [(r.status, r.target, r.version) for r in recorded] == [("succeeded", "docker", "2"), ("succeeded", "docker", "1")]
    finally:
        DockerTarget(state_dir=state_dir).delete(service, "staging")


def test_deploy_process_target(service, state_dir, tmp_path):
    pkg = package_dir(tmp_path, "4")
    try:
        out = cli("--image", str(pkg), "--name", service, "--env", "staging", "--target", "process", "--json",
                  "--state-dir", str(state_dir))
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["target"] == "process" and data["version"] == "4" and data["image_id"].startswith("sha256:")
        assert score(data["scoring_uri"])["version"] == "4"  # the process outlives the CLI
    finally:
        ProcessTarget(state_dir=state_dir).delete(service, "staging")


def test_bad_input_exits_2_with_the_fix(service, tmp_path, state_dir):
    config = tmp_path / "c.yaml"
    config.write_text("cpu_core: 1\n")
    out = cli("--image", "x:1", "--name", service, "--env", "staging", "--config", str(config), "--state-dir", str(state_dir))
    assert out.returncode == 2 and "Did you mean 'cpu_cores'?" in out.stderr
    out = cli("--image", "x:1", "--name", "Not Valid", "--env", "staging", "--json", "--state-dir", str(state_dir))
    assert out.returncode == 2 and json.loads(out.stdout)["error"] == "ConfigError"


def test_default_target_is_docker_when_an_engine_answers_else_process(docker_client, monkeypatch):
    from pipeline_plugin.stages.deploy import default_target_name

    assert default_target_name() == "docker"
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert default_target_name() == "process"
