"""Deployment configuration files: Azure ML's deploymentconfig.json shape and snake_case YAML."""

from __future__ import annotations

import json

import pytest

from pipeline_plugin import deployconfig
from pipeline_plugin.errors import ConfigError


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_azure_deploymentconfig_json(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAUD_KEY", "from-env")
    path = write(tmp_path, "deploymentconfig.json", json.dumps({
        "computeType": "ACI",
        "containerResourceRequirements": {"cpu": 0.5, "memoryInGB": 1.5},
        "environmentVariables": {"LOG_LEVEL": "debug", "WORKER_COUNT": 2},
        "authEnabled": True,
        "primaryKey": "${FRAUD_KEY}",
        "secondaryKey": "second",
        "numReplicas": 2,
        "autoScaler": {"autoscaleEnabled": True, "minReplicas": 2, "maxReplicas": 5, "targetUtilization": 60},
    }))
    c = deployconfig.load(path)
    assert (c.compute_type, c.cpu_cores, c.memory_gb, c.replicas) == ("aci", 0.5, 1.5, 2)
    assert c.environment_variables == {"LOG_LEVEL": "debug", "WORKER_COUNT": "2"}
    assert c.keys == ("from-env", "second")
    assert (c.autoscaler.min_replicas, c.autoscaler.max_replicas, c.autoscaler.target_utilization) == (2, 5, 60)
    assert "from-env" not in json.dumps(c.to_dict())  # keys are counted, never printed


def test_azure_only_settings_are_ignored_with_a_warning_naming_them(tmp_path, capsys):
    """An Azure ACI/AKS deployment config works as is: its settings that mean nothing here are named
    in a warning with what replaces them; a typo is still an error."""
    path = write(tmp_path, "deploymentconfig.json", json.dumps({
        "computeType": "aks", "containerResourceRequirements": {"cpu": 1, "memoryInGB": 2, "cpuLimit": 2},
        "sslEnabled": False, "appInsightsEnabled": True, "scoringTimeoutMs": 60000,
        "autoScaler": {"autoscaleEnabled": True, "minReplicas": 1, "maxReplicas": 3, "refreshPeriodInSeconds": 10},
    }))
    c = deployconfig.load(path)
    assert (c.cpu_cores, c.memory_gb, c.autoscaler.max_replicas) == (1, 2, 3)
    err = capsys.readouterr().err
    for key in ("sslEnabled", "appInsightsEnabled", "scoringTimeoutMs", "containerResourceRequirements.cpuLimit",
                "autoScaler.refreshPeriodInSeconds"):
        assert key in err, (key, err)
    assert "SCORING_TIMEOUT_MS in environmentVariables" in err
    with pytest.raises(ConfigError, match="unknown setting 'sslEnabeld'"):
        deployconfig.load(write(tmp_path, "typo.json", json.dumps({"sslEnabeld": False})))


def test_snake_case_yaml(tmp_path):
    path = write(tmp_path, "deploy.yml", """
cpu_cores: 1
memory_gb: 0.5
port: 8890
environment_variables: {A: b}
keys: [k1]
autoscaler: {min_replicas: 1, max_replicas: 3}
""")
    c = deployconfig.load(path)
    assert (c.cpu_cores, c.memory_gb, c.port, c.keys) == (1.0, 0.5, 8890, ("k1",))
    assert c.autoscaler.target_utilization == 70
    assert deployconfig.merge(c, port=9000, cpu_cores=None).port == 9000


@pytest.mark.parametrize(
    "data, message",
    [
        ({"enviromentVariables": {}}, r"unknown setting 'enviromentVariables'. Did you mean 'environmentVariables'\?"),
        ({"memoryInGB": 1}, r"'memoryInGB' belongs inside containerResourceRequirements"),
        ({"containerResourceRequirements": {"cpus": 1}}, r"unknown setting containerResourceRequirements.'cpus'. Did you mean 'cpu'\?"),
        ({"cpu_cores": 0}, r"cpu_cores is 0; give a number greater than 0"),
        ({"cpu_cores": 1, "containerResourceRequirements": {"cpu": 1}}, r"cpu_cores is set twice"),
        ({"port": 70000}, r"port is 70000"),
        ({"computeType": "aks2"}, r"computeType is 'aks2'.*Did you mean 'aks'\?"),
        ({"authEnabled": True}, r"authEnabled is true but no scoring key"),
        ({"keys": ["${SURELY_NOT_SET_X}"]}, r"keys\[0\] refers to the environment variable SURELY_NOT_SET_X"),
        ({"autoscaler": {"min_replicas": 3, "max_replicas": 2}}, r"max_replicas \(2\) is below min_replicas \(3\)"),
        ({"environment_variables": {"1BAD": "x"}}, r"environment_variables has the name '1BAD'"),
        ({"replicas": 0}, r"replicas is 0; give a whole number of at least 1"),
        ({"numReplicas": 2, "replicas": 3}, r"'replicas' and 'numReplicas' set the same thing"),
    ],
)
def test_bad_settings_fail_at_load_naming_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        deployconfig.parse(data, source="deploymentconfig.json")


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        deployconfig.load(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        deployconfig.load(write(tmp_path, "bad.json", "{"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        deployconfig.load(write(tmp_path, "list.yaml", "- 1\n"))
