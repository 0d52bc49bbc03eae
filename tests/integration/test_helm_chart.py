"""The Helm chart with a real helm 3: lint, render, validate against Kubernetes 1.30 schemas, reject bad values.

helm comes from tests/k8s/get-helm.sh (cached under ~/.cache/helm-bin). The resource groups the chart
renders are loaded by the manager's own strict parser, and the consumer Deployment the manager would
build from each of them is validated too.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from jobqueue.groups import parse_groups
from jobqueue.settings import Settings
from jobqueue.sizes import parse_bytes
from manager.backends.kube_objects import consumer_deployment

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "jobqueue"
FULL = CHART / "examples" / "full-values.yaml"
NVME = CHART / "examples" / "local-nvme-values.yaml"
KARPENTER = CHART / "examples" / "karpenter-nvme.yaml"
EXAMPLES = [[], [str(FULL)], [str(NVME)]]
EXAMPLE_IDS = ["defaults", "full-example", "local-nvme-example"]
KUBERNETES = "1.30.0"


@pytest.fixture(scope="session")
def helm() -> str:
    return helm_binary()


def helm_binary() -> str:
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    out = subprocess.run(["bash", str(ROOT / "tests" / "k8s" / "get-helm.sh")], capture_output=True, text=True,
                         check=True)
    return str(Path(out.stdout.strip().splitlines()[-1]) / "helm")


def run(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, cwd=ROOT)


def render(helm: str, *values: str, **sets: str) -> list[dict]:
    args = ["template", "jq", str(CHART), "--namespace", "data"]
    for v in values:
        args += ["-f", v]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    out = run(helm, *args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def named(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("values", EXAMPLES, ids=EXAMPLE_IDS)
def test_lint_render_and_validate(helm, values):
    lint = run(helm, "lint", "--strict", str(CHART), *sum((["-f", v] for v in values), []))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = render(helm, *values)
    kinds = sorted(d["kind"] for d in docs)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds, "nothing cluster-wide"
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert not any("secrets" in r["resources"] for r in role["rules"]), "the manager never reads Secrets"
    manager = named(docs, "Deployment", "jq-jobqueue-manager")
    pod = manager["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert manager["spec"]["replicas"] == 2 and pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert {p["httpGet"]["path"] for p in (container["livenessProbe"], container["readinessProbe"])} == {
        "/healthz", "/readyz"}
    assert not any("value" in e and "redis" in e["value"] for e in container["env"]), "no Redis URL inline"
    assert {"name": "JOBQUEUE_HTTP_HOST", "value": "0.0.0.0"} in container["env"], "probed from outside the pod"
    assert {"PodDisruptionBudget", "Service", "ServiceAccount", "ConfigMap"} <= set(kinds)


@pytest.mark.parametrize("values", EXAMPLES, ids=EXAMPLE_IDS)
def test_rendered_groups_are_what_the_manager_loads_and_their_deployments_validate(helm, values):
    docs = render(helm, *values)
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")]
    groups = parse_groups(yaml.safe_load(config["data"]["groups.yaml"]), "groups.yaml")
    settings = Settings(kubernetes_release="jq-jobqueue", kubernetes_namespace="data")
    for group in groups.values():
        deployment = consumer_deployment(group, settings, replicas=1)
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "jq-jobqueue-consumer" and pod["automountServiceAccountToken"] is False
        assert {"configMapRef": {"name": "jq-jobqueue-env"}} in pod["containers"][0]["envFrom"]
        assert {"name": "config", "mountPath": "/etc/jobqueue/config", "readOnly": True} in pod["containers"][0][
            "volumeMounts"]
    if values == [str(FULL)]:
        lssd = consumer_deployment(groups["lssd"], settings, replicas=1)["spec"]["template"]["spec"]
        assert lssd["nodeSelector"] == {"jobqueue.io/pool": "lssd"}
        assert {"key": "jobqueue.io/pool", "operator": "Equal", "value": "lssd", "effect": "NoSchedule"} in lssd[
            "tolerations"]
        assert lssd["containers"][0]["resources"]["limits"]["ephemeral-storage"] == "350Gi"
        assert {"name": "JOBQUEUE_SPILL_DIRECTORY", "value": "/mnt/nvme/spill"} in lssd["containers"][0]["env"]
        assert {"name": "JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT", "value": "75.0"} in lssd["containers"][0]["env"]
        assert lssd["terminationGracePeriodSeconds"] == 7200
        assert {"name": "JOBQUEUE_TABLE_SCAN_CACHE_BYTES", "value": "200Gi"} in lssd["containers"][0]["env"]
        assert Settings(table_scan_cache_bytes="200Gi").table_scan_cache_bytes == 200 << 30
        dashboard = [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]
        assert dashboard and "jobqueue_queue_ready_jobs" in dashboard[0]["data"]["jobqueue.json"]


def test_pod_monitor_for_the_consumers_behind_a_flag(helm):
    assert not [d for d in render(helm) if d["kind"] == "PodMonitor"]
    docs = render(helm, **{"metrics.podMonitor.enabled": "true", "metrics.podMonitor.labels.release": "prom"})
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")]
    groups = parse_groups(yaml.safe_load(config["data"]["groups.yaml"]), "groups.yaml")
    settings = Settings(kubernetes_release="jq-jobqueue", kubernetes_namespace="data")
    for group in groups.values():  # it selects the pods the manager creates, on the port they serve
        pod = consumer_deployment(group, settings, replicas=1)["spec"]["template"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in pod["spec"]["containers"][0]["ports"]


def test_service_monitor_behind_a_flag(helm):
    assert not [d for d in render(helm) if d["kind"] == "ServiceMonitor"]
    docs = render(helm, **{"metrics.serviceMonitor.enabled": "true"})
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]


@pytest.mark.parametrize(
    ("sets", "words"),
    [
        ({"resourceGroups.default.minInstances": "two"}, ["minInstances", "integer"]),
        ({"resourceGroups.default.minInstances": "3", "resourceGroups.default.maxInstances": "1"},
         ["resourceGroups.default: minInstances (3) is above maxInstances (1)"]),
        ({"resourceGroups.default.maxInstancez": "3"}, ["maxInstancez", "not allowed"]),
        ({"resourceGroups.default.terminationGracePeriodSeconds": "-5"},
         ["terminationGracePeriodSeconds", "greater than or equal to 0"]),
        ({"resourceGroups.default.resources.limits.memory": "lots"}, ["limits.memory", "Does not match pattern"]),
        ({"resourceGroups.Bad_Name.maxInstances": "1"}, ["Bad_Name"]),
        ({"redis.existingSecret": ""}, ["existingSecret"]),
        ({"resourceGroups.default.scanCacheBytes": "-1"}, ["scanCacheBytes", "greater than or equal to 0"]),
        ({"resourceGroups.default.scanCacheBytes": "lots"}, ["scanCacheBytes", "Does not match pattern"]),
        ({"profiler.export_to": "ftp://bucket"}, ["export_to", "Does not match pattern"]),
        ({"profiler.perf_polling_frequency_hz": "0"}, ["perf_polling_frequency_hz", "greater than or equal to 1"]),
        ({"profiler.collector": "gdb"}, ["collector", "must be one of"]),
    ],
)
def test_bad_values_fail_with_a_readable_error(helm, sets, words):
    assert_refused(helm, sets, words)


def assert_refused(helm: str, sets: dict[str, str], words: list[str]) -> None:
    """`helm template` with these `--set` values fails, and its error has every one of `words`."""
    args = ["template", "jq", str(CHART)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    out = run(helm, *args)
    assert out.returncode != 0
    for w in words:
        assert w in out.stderr, out.stderr


def test_the_profiler_daemonset_is_opt_in_least_privileged_and_speaks_our_settings(helm):
    assert not [d for d in render(helm) if d["kind"] == "DaemonSet"], "off by default"
    docs = render(helm, **{"profiler.enabled": "true", "profiler.export_to": "s3://team-profiles",
                           "profiler.bucket_subdirectory": "prod/jobqueue", "profiler.nodeSelector.pool": "nvme"})
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostPID"] is True and pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"pool": "nvme"}
    assert container["command"] == ["jobqueue", "profiler"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN", "SYS_PTRACE"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] == {"cpu": "25m", "memory": "64Mi"}
    assert not any("redis" in str(e).lower() for e in container["envFrom"]), "the profiler never talks to Redis"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "JOBQUEUE_NODE_NAME" in env and env["JOBQUEUE_PROFILER_EXPORT_TO"] == "s3://team-profiles"
    settings = Settings(**{k.removeprefix("JOBQUEUE_").lower(): v for k, v in env.items() if v is not None})
    assert (settings.profiler_perf_polling_frequency_hz, settings.profiler_call_graph,
            settings.profiler_dump_duration_seconds, settings.profiler_bucket_subdirectory) == (
        99, True, 60, "prod/jobqueue")


@pytest.mark.parametrize(("keep", "daemonset"), [("false", False), ("true", True)])
def test_suspended_stops_the_manager_and_the_profiler_unless_kept(helm, keep, daemonset):
    docs = render(helm, **{"suspended": "true", "profiler.enabled": "true",
                           "profiler.keep_running_when_suspended": keep})
    assert named(docs, "Deployment", "jq-jobqueue-manager")["spec"]["replicas"] == 0
    assert bool([d for d in docs if d["kind"] == "DaemonSet"]) is daemonset


def test_the_karpenter_example_provides_what_the_nvme_groups_ask_for(helm):
    """Karpenter's CRDs are not among kubernetes-validate's schemas (it knows built-in kinds only), and
    upstream's CRD files are not vendored here, so the two Karpenter objects are checked field by field
    against what the chart renders for the local-NVMe example instead."""
    node_class, node_pool = yaml.safe_load_all(KARPENTER.read_text())
    assert (node_class["apiVersion"], node_class["kind"]) == ("karpenter.k8s.aws/v1", "EC2NodeClass")
    assert (node_pool["apiVersion"], node_pool["kind"]) == ("karpenter.sh/v1", "NodePool")
    assert node_class["spec"]["instanceStorePolicy"] == "RAID0"
    template = node_pool["spec"]["template"]
    assert template["spec"]["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass",
                                                "name": node_class["metadata"]["name"]}
    requirements = {r["key"]: (r["operator"], r["values"]) for r in template["spec"]["requirements"]}
    assert requirements["karpenter.k8s.aws/instance-category"] == ("In", ["m", "c", "r"])
    assert requirements["karpenter.k8s.aws/instance-generation"] == ("Gt", ["5"])
    op, tiny = requirements["karpenter.k8s.aws/instance-size"]
    assert op == "NotIn" and {"nano", "micro", "small", "medium", "large"} <= set(tiny)
    op, (min_nvme_gb,) = requirements["karpenter.k8s.aws/instance-local-nvme"]
    assert op == "Gt"

    docs = render(helm, str(NVME))
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")]
    groups = parse_groups(yaml.safe_load(config["data"]["groups.yaml"]), "groups.yaml")
    settings = Settings(kubernetes_release="jq-jobqueue", kubernetes_namespace="data")
    profiles, ephemerals = set(), []
    for group in groups.values():
        pod = consumer_deployment(group, settings, replicas=1)["spec"]["template"]["spec"]
        assert pod["nodeSelector"].items() <= template["metadata"]["labels"].items(), "lands on the pool"
        for taint in template["spec"]["taints"]:
            assert {"key": taint["key"], "operator": "Equal", "value": taint["value"], "effect": taint["effect"]} in \
                pod["tolerations"], "tolerates the pool's taint"
        (container,) = pod["containers"]
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        ephemeral = parse_bytes(limits["ephemeral-storage"])
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT"] == "75.0"
        cache = parse_bytes(env["JOBQUEUE_TABLE_SCAN_CACHE_BYTES"])
        assert cache + (100 << 30) <= ephemeral, "the scan cache leaves at least 100Gi of the volume to spill"
        ephemerals.append(ephemeral)
        assert "JOBQUEUE_SPILL_DIRECTORY" not in env, "spill stays in the pod's emptyDir: it is on the NVMe array"
        profiles.add((requests["cpu"], limits["memory"], limits["ephemeral-storage"]))
    assert profiles == {("7", "50Gi", "350Gi"), ("15", "100Gi", "600Gi")}
    assert min(ephemerals) < int(min_nvme_gb) * 10**9, "the pool's smallest NVMe array holds the smaller profile"
    (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
    profiler_pod = daemonset["spec"]["template"]["spec"]
    assert profiler_pod["nodeSelector"] == template["metadata"]["labels"]
    assert profiler_pod["tolerations"] == [{"key": "jobqueue.io/pool", "operator": "Equal", "value": "nvme",
                                            "effect": "NoSchedule"}]
