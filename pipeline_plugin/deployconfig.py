"""Deployment configuration: resources, port, environment, scoring keys, replicas, autoscaling.

Read from a YAML or JSON file. Azure ML's ``deploymentconfig.json`` keys are accepted as they are
(camelCase: ``computeType``, ``containerResourceRequirements: {cpu, memoryInGB}``, ``port``,
``environmentVariables``, ``numReplicas``, ``autoScaler``, ``authEnabled``, ``primaryKey``,
``secondaryKey``), and so are snake_case names (``cpu_cores``, ``memory_gb``, ``port``,
``environment_variables``, ``keys``, ``replicas``, ``autoscaler: {min_replicas, max_replicas,
target_utilization}``). An unknown key fails at load with a "did you mean".

A scoring key written as ``${NAME}`` is read from the environment variable NAME, so that the file
itself need not hold secrets.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, suggest

COMPUTE_TYPES = ("local", "docker", "process", "aci", "aks", "kubernetes")

#: camelCase (Azure ML) name -> our name
_TOP_LEVEL = {
    "computeType": "compute_type",
    "compute_type": "compute_type",
    "containerResourceRequirements": "container_resource_requirements",
    "container_resource_requirements": "container_resource_requirements",
    "cpu_cores": "cpu_cores",
    "memory_gb": "memory_gb",
    "port": "port",
    "environmentVariables": "environment_variables",
    "environment_variables": "environment_variables",
    "keys": "keys",
    "primaryKey": "primary_key",
    "primary_key": "primary_key",
    "secondaryKey": "secondary_key",
    "secondary_key": "secondary_key",
    "authEnabled": "auth_enabled",
    "auth_enabled": "auth_enabled",
    "numReplicas": "replicas",
    "replicas": "replicas",
    "autoScaler": "autoscaler",
    "autoscaler": "autoscaler",
    "description": "description",
    "tags": "tags",
}
_RESOURCES = {"cpu": "cpu_cores", "memoryInGB": "memory_gb", "cpu_cores": "cpu_cores", "memory_gb": "memory_gb"}
_AUTOSCALER = {
    "autoscaleEnabled": "enabled",
    "enabled": "enabled",
    "minReplicas": "min_replicas",
    "min_replicas": "min_replicas",
    "maxReplicas": "max_replicas",
    "max_replicas": "max_replicas",
    "targetUtilization": "target_utilization",
    "target_utilization": "target_utilization",
}
#: settings of Azure's own deployment configs that mean nothing on these targets: accepted, so an
#: Azure file works as is, and named in a warning with what takes their place
AZURE_ONLY = {
    "sslEnabled": "TLS terminates in front of the stable address (a load balancer or ingress)",
    "sslCertificate": "TLS terminates in front of the stable address",
    "sslKey": "TLS terminates in front of the stable address",
    "sslCname": "TLS terminates in front of the stable address",
    "dnsNameLabel": "the scoring URI is the stable address (--port)",
    "location": "the target decides where it runs",
    "appInsightsEnabled": "the runtime serves Prometheus metrics at GET /metrics",
    "enableAppInsights": "the runtime serves Prometheus metrics at GET /metrics",
    "collectModelData": "log inputs in run() if you need them",
    "cmkVaultBaseUrl": "no customer-managed keys here",
    "cmkKeyName": "no customer-managed keys here",
    "cmkKeyVersion": "no customer-managed keys here",
    "vnetName": "the target's own network applies",
    "subnetName": "the target's own network applies",
    "computeTargetName": "--target picks the target",
    "namespace": "the kubernetes target uses the kubeconfig's namespace",
    "tokenAuthEnabled": "scoring keys (keys, primaryKey) are the authentication",
    "scoringTimeoutMs": "set SCORING_TIMEOUT_MS in environmentVariables",
    "replicaMaxConcurrentRequests": "the runtime's workers and threads decide concurrency",
    "maxRequestWaitTime": "the runtime's scoring timeout bounds a request",
    "periodSeconds": "the probes are set from the image's health and readiness routes",
    "initialDelaySeconds": "the probes are set from the image's health and readiness routes",
    "timeoutSeconds": "the probes are set from the image's health and readiness routes",
    "successThreshold": "the probes are set from the image's health and readiness routes",
    "failureThreshold": "the probes are set from the image's health and readiness routes",
    "refreshPeriodInSeconds": "the autoscaler follows CPU utilization continuously",
    "gpuCores": "no accelerators on these targets",
    "cpuLimit": "limits equal the requested cpu",
    "memoryInGBLimit": "limits equal the requested memoryInGB",
}

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


@dataclass(frozen=True)
class Autoscaler:
    min_replicas: int = 1
    max_replicas: int = 1
    target_utilization: int = 70  # percent of requested CPU


@dataclass(frozen=True)
class DeployConfig:
    compute_type: str | None = None
    cpu_cores: float | None = None
    memory_gb: float | None = None
    port: int | None = None
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    keys: tuple[str, ...] = ()
    replicas: int = 1
    autoscaler: Autoscaler | None = None
    description: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    source: str = "<config>"

    def to_dict(self) -> dict[str, Any]:
        """A printable view; scoring keys are counted, never shown."""
        return {
            "compute_type": self.compute_type,
            "cpu_cores": self.cpu_cores,
            "memory_gb": self.memory_gb,
            "port": self.port,
            "environment_variables": dict(self.environment_variables),
            "keys": len(self.keys),
            "replicas": self.replicas,
            "autoscaler": None if self.autoscaler is None else vars(self.autoscaler).copy(),
            "description": self.description,
            "tags": dict(self.tags),
        }


def load(path: str | os.PathLike[str]) -> DeployConfig:
    """Read and validate a deployment configuration file (``.json``, ``.yaml`` or ``.yml``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"deployment config {str(p)!r} does not exist; pass --config with a YAML or JSON file")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - yaml.YAMLError, json.JSONDecodeError
        raise ConfigError(f"deployment config {str(p)!r} is not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: {exc}") from None
    if data is None:
        data = {}
    return parse(data, source=str(p))


def parse(data: Any, source: str = "<config>") -> DeployConfig:
    """Validate a mapping in the deploymentconfig.json shape (camelCase or snake_case)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the deployment config must be a mapping of settings, got {type(data).__name__}")
    seen: dict[str, str] = {}  # our name -> the key the file used
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("cpu", "memoryInGB"):
            raise ConfigError(f"{source}: {key!r} belongs inside containerResourceRequirements: {{\"{key}\": ...}} (or use cpu_cores / memory_gb)")
        name = _known(source, "", str(key), _TOP_LEVEL)
        if name is None:
            continue
        if name in seen:
            raise ConfigError(f"{source}: {key!r} and {seen[name]!r} set the same thing; keep one")
        seen[name] = str(key)
        values[name] = value

    out: dict[str, Any] = {"source": source}
    if "compute_type" in values:
        ct = values["compute_type"]
        if not isinstance(ct, str) or ct.lower() not in COMPUTE_TYPES:
            raise ConfigError(f"{source}: {seen['compute_type']} is {ct!r}; valid: {', '.join(COMPUTE_TYPES)}.{suggest(str(ct).lower(), COMPUTE_TYPES) if isinstance(ct, str) else ''}")
        out["compute_type"] = ct.lower()

    resources: dict[str, Any] = {}
    if "container_resource_requirements" in values:
        crr = values["container_resource_requirements"]
        where = seen["container_resource_requirements"]
        if not isinstance(crr, Mapping):
            raise ConfigError(f"{source}: {where} must be a mapping like {{cpu: 0.5, memoryInGB: 1}}, got {crr!r}")
        for key, value in crr.items():
            name = _known(source, where + ".", str(key), _RESOURCES)
            if name is not None:
                resources[name] = (f"{where}.{key}", value)
    for name in ("cpu_cores", "memory_gb"):
        if name in values:
            if name in resources:
                raise ConfigError(f"{source}: {name} is set twice ({seen[name]} and {resources[name][0]}); keep one")
            resources[name] = (seen[name], values[name])
    for name, (where, value) in resources.items():
        out[name] = _positive_number(source, where, value)

    if "port" in values:
        port = values["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ConfigError(f"{source}: port is {port!r}; give a TCP port number between 1 and 65535")
        out["port"] = port

    if "environment_variables" in values:
        envs = values["environment_variables"]
        where = seen["environment_variables"]
        if not isinstance(envs, Mapping):
            raise ConfigError(f"{source}: {where} must be a mapping of NAME: value, got {type(envs).__name__}")
        clean: dict[str, str] = {}
        for k, v in envs.items():
            if not isinstance(k, str) or not _ENV_NAME.match(k):
                raise ConfigError(f"{source}: {where} has the name {k!r}; names are letters, digits and _ and do not start with a digit")
            if isinstance(v, (dict, list)) or v is None:
                raise ConfigError(f"{source}: {where}.{k} must be a string or number, got {type(v).__name__}")
            clean[k] = str(v).lower() if isinstance(v, bool) else str(v)
        out["environment_variables"] = clean

    keys: list[str] = []
    if "keys" in values:
        raw = values["keys"]
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            raise ConfigError(f"{source}: keys must be a list of scoring keys (or ${{ENV_VAR}} references)")
        keys.extend(_key(source, f"keys[{i}]", k) for i, k in enumerate(raw))
    for name in ("primary_key", "secondary_key"):
        if name in values:
            keys.append(_key(source, seen[name], values[name]))
    if "auth_enabled" in values:
        auth = values["auth_enabled"]
        if not isinstance(auth, bool):
            raise ConfigError(f"{source}: {seen['auth_enabled']} is {auth!r}; use true or false")
        if auth and not keys:
            raise ConfigError(
                f"{source}: {seen['auth_enabled']} is true but no scoring key is set; add keys: [\"${{SCORING_KEY}}\"] "
                "(or primaryKey) and export SCORING_KEY"
            )
        if not auth:
            keys = []
    out["keys"] = tuple(dict.fromkeys(keys))

    if "replicas" in values:
        out["replicas"] = _count(source, seen["replicas"], values["replicas"])

    if "autoscaler" in values:
        out["autoscaler"] = _autoscaler(source, seen["autoscaler"], values["autoscaler"], out.get("replicas", 1))

    if "description" in values:
        if not isinstance(values["description"], str):
            raise ConfigError(f"{source}: description must be a string")
        out["description"] = values["description"]
    if "tags" in values:
        tags = values["tags"]
        if not isinstance(tags, Mapping) or not all(isinstance(k, str) for k in tags):
            raise ConfigError(f"{source}: tags must be a mapping of name: value")
        out["tags"] = {k: str(v) for k, v in tags.items()}
    return DeployConfig(**out)


def merge(config: DeployConfig, **overrides: Any) -> DeployConfig:
    """Flags win over the file: return ``config`` with every non-None override applied."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def _known(source: str, prefix: str, key: str, names: Mapping[str, str]) -> str | None:
    """Our name for ``key``; None (after a warning) for an Azure-only setting; else a ConfigError."""
    if key not in names and key in AZURE_ONLY:
        print(f"warning: {source}: {prefix}{key} is an Azure ML setting with no effect here ({AZURE_ONLY[key]}); "
              "ignored", file=sys.stderr)
        return None
    if key not in names:
        raise ConfigError(f"{source}: unknown setting {prefix}{key!r}.{suggest(key, list(names))}")
    return names[key]


def _positive_number(source: str, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise ConfigError(f"{source}: {where} is {value!r}; give a number greater than 0 (for example 0.5)")
    return float(value)


def _count(source: str, where: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{source}: {where} is {value!r}; give a whole number of at least {minimum}")
    return value


def _key(source: str, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{source}: {where} must be a non-empty string (a scoring key or ${{ENV_VAR}})")
    ref = _KEY_REF.match(value.strip())
    if ref:
        resolved = os.environ.get(ref.group(1))
        if not resolved:
            raise ConfigError(f"{source}: {where} refers to the environment variable {ref.group(1)}, which is not set; export it")
        value = resolved
    if "," in value or any(c.isspace() for c in value):
        raise ConfigError(f"{source}: {where} contains a comma or white space; scoring keys cannot")
    return value


def _autoscaler(source: str, where: str, value: Any, replicas: int) -> Autoscaler | None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {where} must be a mapping like {{min_replicas: 1, max_replicas: 3, target_utilization: 70}}")
    got: dict[str, Any] = {}
    for key, v in value.items():
        name = _known(source, where + ".", str(key), _AUTOSCALER)
        if name is not None:
            got[name] = (f"{where}.{key}", v)
    if "enabled" in got:
        w, enabled = got.pop("enabled")
        if not isinstance(enabled, bool):
            raise ConfigError(f"{source}: {w} is {enabled!r}; use true or false")
        if not enabled:
            return None
    lo = _count(source, *got["min_replicas"]) if "min_replicas" in got else replicas
    hi = _count(source, *got["max_replicas"]) if "max_replicas" in got else max(lo, replicas)
    if hi < lo:
        raise ConfigError(f"{source}: {where} max_replicas ({hi}) is below min_replicas ({lo}); raise max_replicas")
    target = 70
    if "target_utilization" in got:
        w, target = got["target_utilization"]
        if isinstance(target, bool) or not isinstance(target, int) or not 1 <= target <= 100:
            raise ConfigError(f"{source}: {w} is {target!r}; give a CPU percentage between 1 and 100")
    return Autoscaler(min_replicas=lo, max_replicas=hi, target_utilization=target)
