"""Kubernetes manifests, validated against the Kubernetes schemas (kubernetes-validate, offline).
No cluster runs here: applying is covered only up to the "no cluster configured" error."""

from __future__ import annotations

import json
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from pipeline_plugin.errors import ConfigError, ServiceError
from pipeline_plugin.targets import DeploymentSpec
from pipeline_plugin.targets.kubernetes import KubernetesTarget, manifests

K8S_VERSION = "1.30.0"
IMAGE = "registry.example:5000/fraud@sha256:" + "a" * 64


def by_kind(docs):
    return {d["kind"]: d for d in docs}


def test_manifests_are_valid_and_carry_probes_resources_and_rollout():
    spec = DeploymentSpec(service="fraud", env="production", image=IMAGE, port=8890, cpu_cores=0.5, memory_gb=1.5,
                          environment={"LOG_LEVEL": "debug"}, keys=("k1", "k2"), autoscaler=(2, 6, 60))
    docs = manifests(spec, "ml", with_secret=True)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    k = by_kind(docs)
    assert set(k) == {"Secret", "Deployment", "Service", "HorizontalPodAutoscaler"}
    dep = k["Deployment"]["spec"]
    assert dep["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    c = dep["template"]["spec"]["containers"][0]
    assert c["image"] == IMAGE
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["startupProbe"]["httpGet"]["path"] == "/livez"  # answers while init() loads the model
    assert dep["template"]["spec"]["terminationGracePeriodSeconds"] >= 5 + 65  # preStop + bounded shutdown
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "1536Mi"}, "limits": {"cpu": "500m", "memory": "1536Mi"}}
    env = {e["name"]: e for e in c["env"]}
    assert env["LOG_LEVEL"]["value"] == "debug" and env["PORT"]["value"] == "5001"
    assert env["PIPELINE_PLUGIN_SCORING_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "fraud-production-scoring-keys"
    assert dep["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert k["Service"]["spec"]["ports"][0]["port"] == 8890
    hpa = k["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert all(d["metadata"]["namespace"] == "ml" for d in docs)
    # without with_secret (what --dry-run prints) the keys appear nowhere
    assert "k1" not in json.dumps(manifests(spec, "ml"))
    # the autoscaler owns the replica count: a deploy never scales a busy service back down
    assert "replicas" not in dep
    # rotating the keys changes the pod template, so the pods restart with the new Secret
    rotated = by_kind(manifests(DeploymentSpec(**{**spec.__dict__, "keys": ("k3",)}), "ml"))["Deployment"]
    assert rotated["spec"]["template"] != dep["template"]
    assert by_kind(manifests(spec, "ml"))["Deployment"]["spec"]["template"] == dep["template"]


def test_invalid_manifests_would_be_caught_by_the_validator():
    dep = by_kind(manifests(DeploymentSpec(service="fraud", env="staging", image=IMAGE)))["Deployment"]
    dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailabel"] = 0
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_a_local_image_id_cannot_go_to_kubernetes():
    with pytest.raises(ConfigError, match="registry reference"):
        manifests(DeploymentSpec(service="fraud", env="staging", image="sha256:" + "b" * 64))


def test_without_a_cluster_apply_names_kubeconfig(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ServiceError, match="KUBECONFIG"):
        KubernetesTarget().create(DeploymentSpec(service="fraud", env="staging", image=IMAGE))


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_dry_run_prints_valid_manifests(tmp_path, as_json):
    config = tmp_path / "deploymentconfig.json"
    config.write_text(json.dumps({"computeType": "aks", "containerResourceRequirements": {"cpu": 1, "memoryInGB": 2},
                                  "autoScaler": {"minReplicas": 1, "maxReplicas": 4}}))
    cmd = [sys.executable, "-m", "pipeline_plugin.cli", "deploy", "--image", IMAGE, "--name", "fraud", "--env", "staging",
           "--config", str(config), "--dry-run", "--state-dir", str(tmp_path / "state")] + (["--json"] if as_json else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = json.loads(out.stdout)["items"] if as_json else list(yaml.safe_load_all(out.stdout))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler"]  # computeType aks -> kubernetes
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert by_kind(docs)["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 4


@pytest.fixture
def kube_api(tmp_path, monkeypatch):
    """An in-memory Kubernetes API (tests/targets/kube_api.py) that KUBECONFIG points at."""
    from .kube_api import KubeAPI

    with KubeAPI() as api:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(api.kubeconfig("ml"))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("TMPDIR", str(tmp_path))  # the client's discovery cache file
        yield api


def test_apply_waits_for_the_rollout_then_get_list_delete(kube_api):
    target = KubernetesTarget(rollout_timeout=30)
    progress: list[str] = []
    d = target.create(DeploymentSpec(service="fraud", env="staging", image=IMAGE, port=8890, keys=("k1",), cpu_cores=0.5),
                      progress.append)
    assert kube_api.violations == []
    assert d.scoring_uri == "http://fraud-staging.ml.svc.cluster.local:8890/score"
    assert (d.status, d.image, d.image_id) == ("running", IMAGE, IMAGE)  # pinned by digest
    applied = [json.loads(a["body"])["kind"] for a in kube_api.applies]
    assert applied == ["Secret", "Deployment", "Service", "HorizontalPodAutoscaler"]
    assert all(a["query"]["fieldManager"] == ["pipeline-plugin"] for a in kube_api.applies)
    assert kube_api.objects[("secrets", "ml", "fraud-staging-scoring-keys")]["stringData"] == {"keys": "k1"}
    assert any("1/1 updated" in line or "updated," in line for line in progress)  # it waited for the rollout
    assert [x.env for x in KubernetesTarget().list("fraud")] == ["staging"]

    target.delete("fraud", "staging")
    target.delete("fraud", "staging")
    assert target.get("fraud", "staging") is None and kube_api.objects == {}


def test_what_staging_reports_can_be_deployed_to_production(kube_api):
    """promote and rollback deploy the image_id a target reports: on a cluster it must be a
    reference the cluster can pull, pinned by digest."""
    from pipeline_plugin.stages.promote import spec_for

    target = KubernetesTarget(rollout_timeout=30)
    staging = target.create(DeploymentSpec(service="fraud", env="staging", image=IMAGE, port=8890, autoscaler=(2, 5, 60)),
                            lambda _m: None)
    production = target.create(spec_for(staging, "production", staging.image_id, 8891, (), {}), lambda _m: None)
    assert production.image_id == staging.image_id == IMAGE and kube_api.violations == []
    # the autoscaler's bounds go along
    hpa = kube_api.objects[("horizontalpodautoscalers", "ml", "fraud-production")]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 60


def test_an_ingress_address_replaces_the_cluster_dns_name(kube_api, monkeypatch):
    """Smoke tests run from CI runners outside the cluster: the address they reach is configurable."""
    monkeypatch.setenv("PIPELINE_PLUGIN_KUBERNETES_URL", "https://{name}.models.example.com/")
    d = KubernetesTarget(rollout_timeout=30).create(DeploymentSpec(service="fraud", env="staging", image=IMAGE),
                                                    lambda _m: None)
    assert d.scoring_uri == "https://fraud-staging.models.example.com/score"
    assert d.swagger_uri == "https://fraud-staging.models.example.com/swagger.json"
    monkeypatch.setenv("PIPELINE_PLUGIN_KUBERNETES_URL", "https://{host}.example.com")
    with pytest.raises(ConfigError, match=r"PIPELINE_PLUGIN_KUBERNETES_URL.*\{name\}"):
        KubernetesTarget().get("fraud", "staging")


def test_cli_deploys_to_kubernetes_with_json(kube_api, tmp_path):
    cmd = [sys.executable, "-m", "pipeline_plugin.cli", "deploy", "--image", IMAGE, "--name", "fraud", "--env", "production",
           "--target", "kubernetes", "--json", "--state-dir", str(tmp_path / "state")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["scoring_uri"] == "http://fraud-production.ml.svc.cluster.local:80/score"
    assert (data["env"], data["image"], data["target"]) == ("production", IMAGE, "kubernetes")
    assert kube_api.violations == []


# ---- the smoke-test evidence travels with the staging Deployment ---------------------------------
IMAGE_2 = "registry.example:5000/fraud@sha256:" + "c" * 64
SCORING_KEY = "k-s3cret-never-annotated"


def cli(*argv, state, env):
    """One stage as a CI job runs it: its own process, its own state dir, no shared database."""
    cmd = [sys.executable, "-m", "pipeline_plugin.cli", *argv, "--json", "--state-dir", str(state)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


@pytest.fixture
def hosted_runner(kube_api, tmp_path, monkeypatch):
    """A scoring runtime that the staging and production Services' published address reaches, and
    the environment of a job on a hosted runner: KUBECONFIG, no database URL."""
    import os

    from tests.stages.runtime_proc import GOOD_SCRIPT, runtime

    (tmp_path / "sample.json").write_text(json.dumps([[1.0, 2.0], [3.0, 4.5]]))
    (tmp_path / "expected.json").write_text(json.dumps([3.0, 7.5]))
    with runtime(tmp_path, GOOD_SCRIPT.replace("{factor}", "1"), keys=SCORING_KEY) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_PLUGIN_")}
        env.update(PIPELINE_PLUGIN_KUBERNETES_URL=url.rsplit("/score", 1)[0], PIPELINE_PLUGIN_SCORING_KEY=SCORING_KEY)
        yield env


def deploy_and_smoke_test(tmp_path, env, image=IMAGE):
    state = tmp_path / "job-deploy-and-smoke-test"
    out = cli("deploy", "--image", image, "--name", "fraud", "--env", "staging", "--target", "kubernetes",
              "--key", SCORING_KEY, state=state, env=env)
    assert out.returncode == 0, out.stderr
    scoring_uri = json.loads(out.stdout)["scoring_uri"]
    out = cli("smoke-test", "--url", scoring_uri, "--sample", str(tmp_path / "sample.json"), "--expect",
              str(tmp_path / "expected.json"), "--name", "fraud", "--env", "staging", "--target", "kubernetes",
              state=state, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_promote_in_an_empty_state_dir_without_a_database_trusts_the_deployments_smoke_test(kube_api, hosted_runner,
                                                                                           tmp_path):
    smoke = deploy_and_smoke_test(tmp_path, hosted_runner)
    ann = kube_api.objects[("deployments", "ml", "fraud-staging")]["metadata"]["annotations"]
    assert ann["pipeline-plugin.io/smoke-test-image"] == IMAGE
    assert ann["pipeline-plugin.io/smoke-test-passed-at"]
    assert len(ann["pipeline-plugin.io/smoke-test-report-sha256"]) == 64
    assert smoke["recorded"]["annotations"] == {k: v for k, v in ann.items() if "smoke-test-" in k}
    # metadata only: the pods are not restarted, and no key is written to the cluster's metadata
    assert kube_api.objects[("deployments", "ml", "fraud-staging")]["metadata"]["generation"] == 1
    assert [json.loads(p["body"]) for p in kube_api.merge_patches][0].keys() == {"metadata"}
    assert SCORING_KEY not in json.dumps(kube_api.objects[("deployments", "ml", "fraud-staging")])

    # the promote job: another runner, an empty state dir, no PIPELINE_PLUGIN_DATABASE_URL
    promote_state = tmp_path / "job-promote"
    out = cli("promote", "--name", "fraud", "--target", "kubernetes", "--no-writeback", state=promote_state, env=hosted_runner)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["status"], result["image_id"]) == ("promoted", IMAGE)
    assert result["smoke_test"]["passed"] is True  # production was checked with staging's sample and expected output
    production = kube_api.objects[("deployments", "ml", "fraud-production")]
    assert production["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    # it says what it trusted
    assert result["staging_evidence"] == {"on": "kubernetes deployment ml/fraud-staging",
                                          "report_sha256": ann["pipeline-plugin.io/smoke-test-report-sha256"],
                                          "passed_at": ann["pipeline-plugin.io/smoke-test-passed-at"]}
    assert kube_api.violations == []


def test_promote_refuses_a_deployment_whose_image_changed_since_its_smoke_test(kube_api, hosted_runner, tmp_path):
    deploy_and_smoke_test(tmp_path, hosted_runner)
    # staging is redeployed with another image after the smoke test (the annotation, another manager's, stays)
    out = cli("deploy", "--image", IMAGE_2, "--name", "fraud", "--env", "staging", "--target", "kubernetes",
              "--key", SCORING_KEY, state=tmp_path / "job-redeploy", env=hosted_runner)
    assert out.returncode == 0, out.stderr
    ann = kube_api.objects[("deployments", "ml", "fraud-staging")]["metadata"]["annotations"]
    assert ann["pipeline-plugin.io/smoke-test-image"] == IMAGE

    out = cli("promote", "--name", "fraud", "--target", "kubernetes", "--no-writeback", state=tmp_path / "job-promote",
              env=hosted_runner)
    assert out.returncode == 1, out.stdout + out.stderr
    assert IMAGE in out.stderr and IMAGE_2 in out.stderr and "smoke-test-image" in out.stderr
    assert ("deployments", "ml", "fraud-production") not in kube_api.objects  # nothing was promoted


def test_a_deployment_without_smoke_test_evidence_is_refused_naming_the_fix(kube_api, hosted_runner, tmp_path):
    out = cli("deploy", "--image", IMAGE, "--name", "fraud", "--env", "staging", "--target", "kubernetes",
              "--key", SCORING_KEY, state=tmp_path / "job-deploy", env=hosted_runner)
    assert out.returncode == 0, out.stderr
    out = cli("promote", "--name", "fraud", "--target", "kubernetes", state=tmp_path / "job-promote", env=hosted_runner)
    assert out.returncode == 1 and "no passing smoke test" in out.stderr and "pipeline-plugin smoke-test" in out.stderr
    assert ("deployments", "ml", "fraud-production") not in kube_api.objects


def test_a_large_sample_travels_as_a_digest_and_promote_asks_for_the_file(kube_api, hosted_runner, tmp_path):
    from pipeline_plugin.targets.kubernetes import SMOKE_INLINE_MAX, json_sha256, smoke_test_evidence, smoke_test_annotations

    sample = [[float(i), 1.0] for i in range(SMOKE_INLINE_MAX // 8)]
    ann = smoke_test_annotations(IMAGE, {"passed": True}, "2026-01-01T00:00:00Z",
                                 {"sample": sample, "expect": [1.0], "has_expect": True, "tolerance": 1e-6, "requests": 5})
    assert sum(len(v) for v in ann.values()) < 2048  # the check's options and digests only
    evidence = smoke_test_evidence(ann)
    assert evidence["sample_sha256"] == json_sha256(sample) and "sample" not in evidence["check"]
    assert evidence["check"]["requests"] == 5

    deploy_and_smoke_test(tmp_path, hosted_runner)
    key = ("deployments", "ml", "fraud-staging")
    kube_api.objects[key]["metadata"]["annotations"].update(ann)  # as a smoke test with that sample left it
    out = cli("promote", "--name", "fraud", "--target", "kubernetes", state=tmp_path / "job-promote", env=hosted_runner)
    assert out.returncode == 1
    assert "--sample (sha256 " + json_sha256(sample) in out.stderr and "--expect" in out.stderr
