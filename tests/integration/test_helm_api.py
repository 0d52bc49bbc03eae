"""The chart's API (issue 15's Helm part) with the real helm: the `jobqueue api` Deployment, its Service, Ingress,
PodDisruptionBudget and OIDC Secret, the NetworkPolicies, and NOTES.txt.

NetworkPolicy selectors are checked against the pod labels they must (and must not) select: the rendered manager
and API pod templates, and the consumer Deployment the manager itself builds (manager/backends/kube_objects.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from jobqueue.groups import parse_groups
from jobqueue.settings import Settings
from manager.backends.kube_objects import HTTP_PORT, consumer_deployment
from tests.integration.test_helm_chart import CHART, FULL, KUBERNETES, assert_refused, helm_binary, named, render, run

API = "jq-jobqueue-api"
MANAGER = "jq-jobqueue-manager"
OIDC_NAMES = {"JOBQUEUE_OIDC_ISSUER", "JOBQUEUE_OIDC_JWKS_URL", "JOBQUEUE_OIDC_AUDIENCE", "JOBQUEUE_OIDC_OWNER_CLAIM",
              "JOBQUEUE_OIDC_TEAM_CLAIM", "JOBQUEUE_OIDC_ROLE_CLAIM", "JOBQUEUE_OIDC_ALGORITHMS",
              "JOBQUEUE_OIDC_CLIENT_ID", "JOBQUEUE_OIDC_REDIRECT_URL"}
QUOTA_NAMES = {"JOBQUEUE_QUOTA_MAX_QUEUED_PER_OWNER", "JOBQUEUE_QUOTA_MAX_QUEUED_PER_TEAM",
               "JOBQUEUE_QUOTA_MAX_INPUT_ROWS", "JOBQUEUE_QUOTA_MAX_PENDING_UPLOADS_PER_OWNER"}
INGRESS_AND_OIDC_SECRET = {"api.ingress.enabled": "true", "api.ingress.host": "jq.example.com",
                           "api.ingress.tlsSecret": "jq-tls", "api.ingress.className": "nginx",
                           "api.oidc.existingSecret": "jq-oidc"}
CASES = {
    "defaults": ([], {}),
    "full-example": ([str(FULL)], {}),
    "ingress-oidc-secret-networkpolicy-on": ([], INGRESS_AND_OIDC_SECRET),
    "ingress-oidc-secret-networkpolicy-off": ([], {**INGRESS_AND_OIDC_SECRET, "networkPolicy.enabled": "false"}),
    "in-cluster-redis": ([], {"networkPolicy.redis.podSelector.app": "redis"}),
    "api-off": ([], {"api.enabled": "false", "networkPolicy.redis.podSelector.app": "redis"}),
}


@pytest.fixture(scope="session")
def helm() -> str:
    return helm_binary()


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def pod_labels(deployment: dict) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def consumer_pod_labels(docs: list[dict]) -> dict[str, str]:
    """The labels of a consumer pod as the manager renders it from the chart's groups file."""
    config = named(docs, "ConfigMap", "jq-jobqueue-config")
    (group, *_) = parse_groups(yaml.safe_load(config["data"]["groups.yaml"]), "groups.yaml").values()
    settings = Settings(kubernetes_release="jq-jobqueue", kubernetes_namespace="data")
    return pod_labels(consumer_deployment(group, settings, replicas=1))


@pytest.mark.parametrize(("files", "sets"), CASES.values(), ids=CASES.keys())
def test_lint_and_validate_with_the_api_options(helm, files, sets):
    args = ["lint", "--strict", str(CHART), *sum((["-f", f] for f in files), [])]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    lint = run(helm, *args)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = render(helm, *files, **sets)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert bool(policies) is (sets.get("networkPolicy.enabled") != "false")
    assert bool([d for d in docs if d["metadata"]["name"] == API]) is (sets.get("api.enabled") != "false")


def test_the_api_deployment_runs_like_the_manager(helm):
    docs = render(helm)
    api, manager = named(docs, "Deployment", API), named(docs, "Deployment", MANAGER)
    pod, c, m = api["spec"]["template"]["spec"], container(api), container(manager)
    assert api["spec"]["replicas"] == 2
    assert c["command"] == ["jobqueue", "api"] and c["image"] == m["image"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["JOBQUEUE_API_HOST"] == "0.0.0.0"
    assert env["JOBQUEUE_API_WORKERS"] == "1", "one worker per pod: the chart scales by replicas, not by node cores"
    two = container(named(render(helm, **{"api.workers": "2"}), "Deployment", API))
    assert {"name": "JOBQUEUE_API_WORKERS", "value": "2"} in two["env"]
    assert c["ports"] == [{"name": "http", "containerPort": int(env["JOBQUEUE_API_PORT"]), "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["envFrom"] == m["envFrom"], "the same Redis URL, S3 credentials and settings as the manager"
    assert {"secretRef": {"name": "jobqueue-redis"}} in c["envFrom"]
    assert [v for v in c["volumeMounts"] if v["name"] == "config"] == [
        v for v in m["volumeMounts"] if v["name"] == "config"], "the same registry and groups files"
    assert c["securityContext"] == m["securityContext"] and pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == API
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == api["spec"]["selector"]["matchLabels"] == pod_labels(api)
    assert not (OIDC_NAMES | QUOTA_NAMES) & set(env), "unset: not rendered (an unknown JOBQUEUE_* stops the start)"
    assert not [d for d in docs if d["kind"] in ("Ingress", "Secret")]
    service = named(docs, "Service", API)
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["selector"] == pod_labels(api)
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    pdb = named(docs, "PodDisruptionBudget", API)
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": pod_labels(api)}}


def test_the_tls_ca_reaches_the_api_too(helm):
    docs = render(helm, str(FULL))
    api, manager = named(docs, "Deployment", API), named(docs, "Deployment", MANAGER)
    assert {"name": "redis-tls", "secret": {"secretName": "jobqueue-redis-ca"}} in api["spec"]["template"]["spec"][
        "volumes"]
    shared = container(manager)["envFrom"]
    assert container(api)["envFrom"][:len(shared)] == shared and {"secretRef": {"name": "jobqueue-s3"}} in shared


def test_one_replica_has_no_disruption_budget(helm):
    assert not [d for d in render(helm, **{"api.replicas": "1"}) if d["metadata"]["name"] == API and d["kind"] ==
                "PodDisruptionBudget"]


def test_oidc_from_values_becomes_a_secret_and_quotas_become_env(helm, tmp_path):
    docs = render(helm, str(FULL))
    secret = named(docs, "Secret", "jq-jobqueue-api-oidc")
    assert set(secret["stringData"]) == OIDC_NAMES
    assert secret["stringData"]["JOBQUEUE_OIDC_ISSUER"] == "https://login.example.com/"
    c = container(named(docs, "Deployment", API))
    assert {"secretRef": {"name": "jq-jobqueue-api-oidc"}} in c["envFrom"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert len(env) == len(c["env"]) and env["JOBQUEUE_LOG_LEVEL"] == "debug", "api.env overrides, once"
    assert {k: env[k] for k in QUOTA_NAMES} == {"JOBQUEUE_QUOTA_MAX_QUEUED_PER_OWNER": "20",
                                                "JOBQUEUE_QUOTA_MAX_QUEUED_PER_TEAM": "200",
                                                "JOBQUEUE_QUOTA_MAX_INPUT_ROWS": "10000000",
                                                "JOBQUEUE_QUOTA_MAX_PENDING_UPLOADS_PER_OWNER": "0"}  # 0: none
    assert env["JOBQUEUE_API_MAX_BODY_BYTES"] == "512MiB"
    values = tmp_path / "big.yaml"  # from a file, YAML numbers reach templates as float64 (--set gives int64)
    values.write_text("api: {maxBodyBytes: 1073741824, quotas: {maxInputRows: 50000000}}\n")
    big = render(helm, str(values))
    env = {e["name"]: e.get("value") for e in container(named(big, "Deployment", API))["env"]}
    assert (env["JOBQUEUE_API_MAX_BODY_BYTES"], env["JOBQUEUE_QUOTA_MAX_INPUT_ROWS"]) == ("1073741824", "50000000")
    assert named(docs, "PodDisruptionBudget", API)["spec"]["minAvailable"] == 2


def test_an_existing_oidc_secret_is_used_as_is_and_the_ingress_follows_values(helm):
    docs = render(helm, **INGRESS_AND_OIDC_SECRET, **{"api.ingress.annotations.a": "b"})
    assert not [d for d in docs if d["kind"] == "Secret"]
    assert {"secretRef": {"name": "jq-oidc"}} in container(named(docs, "Deployment", API))["envFrom"]
    spec = named(docs, "Ingress", API)["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["jq.example.com"], "secretName": "jq-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "jq.example.com"
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": API, "port": {"name": "http"}}}
    assert named(docs, "Ingress", API)["metadata"]["annotations"] == {"a": "b"}


@pytest.mark.parametrize("sets", [{}, {"networkPolicy.redis.podSelector.app": "redis"}], ids=["external", "in-ns"])
def test_network_policies_select_the_right_pods_and_ports(helm, sets):
    docs = render(helm, **sets)
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    api, manager = named(docs, "Deployment", API), named(docs, "Deployment", MANAGER)
    pods = {"api": pod_labels(api), "manager": pod_labels(manager), "consumer": consumer_pod_labels(docs)}
    for component, labels in pods.items():
        chosen = [n for n, p in policies.items() if selects(p["podSelector"]["matchLabels"], labels)]
        assert chosen == [f"jq-jobqueue-{component}"], (component, chosen)
    assert all(p["policyTypes"] == ["Ingress"] for p in policies.values()), "egress is never restricted"

    (api_rule,) = policies[API]["ingress"]
    assert api_rule["ports"] == [{"port": container(api)["ports"][0]["containerPort"], "protocol": "TCP"}]
    assert "from" not in api_rule, "the API's port is open to any client by default"
    for component, port in (("manager", container(manager)["ports"][0]["containerPort"]), ("consumer", HTTP_PORT)):
        (rule,) = policies[f"jq-jobqueue-{component}"]["ingress"]
        assert rule["ports"] == [{"port": port, "protocol": "TCP"}], component
        assert rule["from"] == [{"namespaceSelector": {}}], "metrics scrapers only (any namespace by default)"

    if not sets:
        assert "jq-jobqueue-redis" not in policies, "Redis outside the namespace: nothing to select"
        return
    redis = policies["jq-jobqueue-redis"]
    assert redis["podSelector"] == {"matchLabels": {"app": "redis"}}
    clients, own = redis["ingress"]
    assert clients["ports"] == [{"port": 6379, "protocol": "TCP"}]
    peers = [p["podSelector"]["matchLabels"] for p in clients["from"]]
    assert all(any(selects(peer, labels) for peer in peers) for labels in pods.values())
    assert not any(selects(peer, {"app.kubernetes.io/name": "jobqueue", "app.kubernetes.io/instance": "jq-jobqueue",
                                  "app.kubernetes.io/component": "profiler"}) for peer in peers)
    assert own == {"from": [{"podSelector": {"matchLabels": {"app": "redis"}}}]}


def test_narrowed_network_policies(helm):
    docs = render(helm, str(FULL))
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    (api_rule,) = policies[API]["ingress"]
    assert api_rule["from"][-1] == monitoring and len(api_rule["from"]) == 3
    assert policies["jq-jobqueue-manager"]["ingress"][0]["from"] == [monitoring]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis-exporter"}}} in policies[
        "jq-jobqueue-redis"]["ingress"][0]["from"]
    only_api_from = render(helm, **{"networkPolicy.apiFrom[0].podSelector.matchLabels.client": "yes"})
    (rule,) = named(only_api_from, "NetworkPolicy", API)["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"client": "yes"}}}], "no open monitoring peer"


def test_without_the_api_nothing_of_it_is_rendered(helm):
    docs = render(helm, **{"api.enabled": "false", "networkPolicy.redis.podSelector.app": "redis"})
    assert not [d for d in docs if "-api" in d["metadata"]["name"]]
    (clients, _) = named(docs, "NetworkPolicy", "jq-jobqueue-redis")["spec"]["ingress"]
    assert all(p["podSelector"]["matchLabels"].get("app.kubernetes.io/component") != "api" for p in clients["from"])


def test_the_api_service_monitor_sends_an_operator_token(helm):
    no_token = render(helm, **{"metrics.serviceMonitor.enabled": "true"})
    assert [d["metadata"]["name"] for d in no_token if d["kind"] == "ServiceMonitor"] == [MANAGER]
    docs = render(helm, **{"metrics.serviceMonitor.enabled": "true", "api.metrics.tokenSecret.name": "prom"})
    monitor = named(docs, "ServiceMonitor", API)
    assert selects(monitor["spec"]["selector"]["matchLabels"], named(docs, "Service", API)["metadata"]["labels"])
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s", "authorization": {
        "type": "Bearer", "credentials": {"name": "prom", "key": "token"}}}]


@pytest.mark.parametrize(("sets", "words"), [
    ({"api.ingress.enabled": "true"}, ["api.ingress.host"]),
    ({"api.oidc.issuer": "https://idp"}, ["api.oidc.jwksUrl"]),
    ({"api.topologySpread.whenUnsatisfiable": "Never"}, ["whenUnsatisfiable", "must be one of"]),
    ({"api.maxBodyBytes": "lots"}, ["maxBodyBytes", "Does not match pattern"]),
    ({"api.env.LOG_LEVEL": "debug"}, ["LOG_LEVEL"]),
    ({"networkPolicy.redis.port": "0"}, ["port", "greater than or equal to 1"]),
    ({"api.workers": "0"}, ["workers", "greater than or equal to 1"]),
])
def test_bad_api_values_fail_with_a_readable_error(helm, sets, words):
    assert_refused(helm, sets, words)


def render_notes(helm_path: str, tmp_path: Path, **sets: str) -> str:
    """NOTES.txt as `helm install` prints it: helm template leaves it out, so a copy of the chart renders it
    into a ConfigMap (the same template engine and values)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ include (print $.Template.BasePath "/NOTES.txt") . | quote }}\n')
    args = ["template", "jq", str(chart), "--namespace", "data", "-s", "templates/zz-notes.yaml"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    out = run(helm_path, *args)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["data"]["notes"]


def test_notes_tell_how_to_get_a_token_reach_the_api_and_submit(helm, tmp_path):
    notes = render_notes(helm, tmp_path)
    assert "kubectl -n data exec deploy/jq-jobqueue-api -- jobqueue tokens create --owner admin --role admin" in notes
    assert "kubectl -n data port-forward svc/jq-jobqueue-api 8080:80" in notes
    assert "http://jq-jobqueue-api.data" in notes
    assert "export JOBQUEUE_API_URL=http://127.0.0.1:8080" in notes and "export JOBQUEUE_API_TOKEN=" in notes
    assert "JobQueueClient(api_url=..., token=...)" in notes
    assert "JOBQUEUE_REDIS_URL" in notes and "registry.yaml" in notes, "the trusted in-cluster way stays"
    with_ingress = render_notes(helm, tmp_path / "i", **INGRESS_AND_OIDC_SECRET)
    assert "export JOBQUEUE_API_URL=https://jq.example.com" in with_ingress
    without = render_notes(helm, tmp_path / "o", **{"api.enabled": "false"})
    assert "tokens create" not in without and "JOBQUEUE_REDIS_URL" in without


def test_the_env_names_the_api_gets_are_settings_of_the_image(helm):
    """An unknown JOBQUEUE_* name stops a process at start (jobqueue/settings.py): every name the chart gives the
    API must be a setting. The API's, OIDC and quota settings land on main from other branches of issue 15; each
    family is checked once Settings has it."""
    docs = render(helm, str(FULL))
    c = container(named(docs, "Deployment", API))
    names = {e["name"] for e in c["env"]} | set(named(docs, "Secret", "jq-jobqueue-api-oidc")["stringData"])
    fields = {f"JOBQUEUE_{f.upper()}" for f in Settings.model_fields}
    not_yet = tuple(f for f in ("JOBQUEUE_API_", "JOBQUEUE_OIDC_", "JOBQUEUE_QUOTA_")
                    if not any(n.startswith(f) for n in fields))
    checked = {n for n in names if not n.startswith(not_yet)}
    assert {"JOBQUEUE_HOME", "JOBQUEUE_RESOURCE_GROUPS_PATH", "JOBQUEUE_LOG_LEVEL"} <= checked
    assert checked <= fields, sorted(checked - fields)
