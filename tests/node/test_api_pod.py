"""The HTTP API in its real pods (issue 15): the chart's two `jobqueue api` replicas on the node, a token made the way
NOTES.txt says (`kubectl exec ... -- jobqueue tokens create`, in the pod, against the cluster's Redis), and the
README's query submitted with `JobQueueClient(api_url=..., token=...)` and nothing else on the client: no Redis, no
storage credentials, no registry file. Its result equals the direct (trusted) mode's.

The tier has no kube-proxy, so no Service IP routes; the pods are reached at the addresses and port of the API
Service's Endpoints, which the real endpoints controller derives from the chart's Service (its selector, its named
target port, the pods' readiness): what kube-proxy would send a client to. One replica takes the submission, the
other the wait and the download (stateless).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobqueue import JobQueueClient, JobStatus, ResourceRequests
from jobqueue.settings import Settings
from tests.node.conftest import Node
from tests.node.timings import record

API_PORT = 8080  # the chart's api.port (the containers')
SERVICE_PORT = 80  # the chart's api.service.port
README_INPUT = {"user.id": [1, 2, 3]}
README_OUTPUT = ["user.f0", "user.logins"]
pytestmark = pytest.mark.timeout(600)


def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` every 0.1 s until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)
    return value


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def api_pods(node: Node) -> list[dict[str, Any]]:
    out = node.kubectl("get", "pods", "-l", "app.kubernetes.io/component=api", "-o", "json")
    return list(json.loads(out)["items"])


def service_endpoints(node: Node, pods: list[dict[str, Any]]) -> list[str]:
    """The URLs behind the chart's API Service: its Endpoints' ready addresses at the port its `http` port targets,
    once they are the two API pods."""
    services = json.loads(node.kubectl("get", "services", "-l", "app.kubernetes.io/component=api", "-o", "json"))
    (service,) = services["items"]
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("http", SERVICE_PORT, "http"), service["spec"]
    pod_ips = sorted(p["status"]["podIP"] for p in pods)

    def ready_addresses() -> list[str] | None:
        endpoints = json.loads(node.kubectl("get", "endpoints", service["metadata"]["name"], "-o", "json"))
        subsets = endpoints.get("subsets") or []
        found = sorted((a["ip"], q["port"]) for sub in subsets for a in sub.get("addresses") or []
                       for q in sub["ports"] if q["name"] == "http")
        return found if [ip for ip, _ in found] == pod_ips else None

    found: list[tuple[str, int]] = until(ready_addresses, 60, f"the API Service's endpoints to be the pods {pod_ips}")
    assert all(port == API_PORT for _, port in found), found  # the named port resolved to the container's
    return [f"http://{ip}:{port}" for ip, port in found]


def ready_times(node: Node, pod: dict[str, Any]) -> tuple[float, float, float]:
    """From the pod's creation: its container started, its `jobqueue api` logged "api started" (the app is up), and
    its Ready condition (the kubelet probes /readyz every 5 s). The pod's timestamps have 1 s resolution."""
    created = _when(pod["metadata"]["creationTimestamp"])
    (status,) = pod["status"]["containerStatuses"]
    started = _when(status["state"]["running"]["startedAt"])
    (ready,) = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["status"] == "True", pod["status"]
    lines = [json.loads(line) for line in node.kubectl("logs", pod["metadata"]["name"], "-c", "api").splitlines()
             if line.startswith("{")]
    (serving,) = [_when(line["timestamp"]) for line in lines if line.get("event") == "api started"]
    return started - created, serving - created, _when(ready["lastTransitionTime"]) - created


def test_readme_query_over_http_through_the_api_pods_equals_the_direct_mode(node: Node, tmp_path: Path) -> None:
    pods = api_pods(node)
    assert len(pods) == 2, f"the chart's two API replicas: {[p['metadata']['name'] for p in pods]}\n{node.logs()}"
    for pod in pods:
        spec = pod["spec"]
        assert spec["containers"][0]["command"] == ["jobqueue", "api"]
        assert spec["automountServiceAccountToken"] is False and spec["securityContext"]["runAsUser"] == 10001
    started, serving, ready = (max(t) for t in zip(*(ready_times(node, p) for p in pods), strict=True))
    record("API pods: created -> container started (slower of 2)", started)
    record("API pods: created -> `api started` logged (slower of 2)", serving)
    record("API pods: created -> Ready condition (slower of 2)", ready)
    first, second = service_endpoints(node, pods)

    for url in (first, second):
        reply = httpx.get(f"{url}/readyz", timeout=5)
        assert (reply.status_code, reply.json()["status"]) == (200, "ready"), reply.text
        for headers in ({}, {"Authorization": "Bearer jq_not-a-token"}):
            refused = httpx.get(f"{url}/v1/jobs", headers=headers, timeout=5)
            assert refused.status_code == 401, (headers, refused.status_code, refused.text)

    exec_started = time.monotonic()
    token = node.kubectl("exec", pods[0]["metadata"]["name"], "-c", "api", "--", "jobqueue", "tokens", "create",
                         "--owner", "alice", "--team", "risk", "--role", "user", "--expires", "1d").strip()
    record("kubectl exec ... jobqueue tokens create", time.monotonic() - exec_started)
    assert token and "\n" not in token and " " not in token, f"the token alone on stdout: {token!r}"

    (tmp_path / "home").mkdir()
    nothing = Settings(home=tmp_path / "home")  # no Redis URL, no registry file, no storage credentials
    assert nothing.redis_url is None and nothing.registry_path is None and nothing.s3_access_key_id is None
    with JobQueueClient(nothing, api_url=first, token=token) as submitter, \
            JobQueueClient(nothing, api_url=second, token=token) as reader, \
            JobQueueClient(node.settings()) as direct:
        assert not submitter._async.direct and direct._async.direct
        until(lambda: "default" in {g.group for g in submitter.groups()}, 120,
              "the manager pod publishing the groups, read over HTTP")

        # the README's example, as it is written: from zero consumer pods
        submitted = time.monotonic()
        job = submitter.offline_query(input=README_INPUT, output=README_OUTPUT, run_asynchronously=True,
                                      resources=ResourceRequests(resource_group="default"))
        on_reader = reader.job(job.id)  # the other replica: the API keeps no state of its own
        rec = on_reader.wait(timeout=300, show_progress=False)
        over_http = on_reader.to_pandas()
        record("over HTTP: submit -> result in pandas (consumer pod from zero)", time.monotonic() - submitted)
        assert rec.status is JobStatus.SUCCEEDED and (rec.owner, rec.team) == ("alice", "risk"), rec
        summary = on_reader.performance_summary
        assert summary is not None and summary.rows_out == 3

        submitted = time.monotonic()
        local = direct.offline_query(input=README_INPUT, output=README_OUTPUT, run_asynchronously=True,
                                     resources=ResourceRequests(resource_group="default"))
        local.wait(timeout=300, show_progress=False)
        in_direct_mode = local.to_pandas()
        record("direct: submit -> result in pandas (right after)", time.monotonic() - submitted)

        submitted = time.monotonic()
        again = submitter.offline_query(input=README_INPUT, output=README_OUTPUT, run_asynchronously=True,
                                        resources=ResourceRequests(resource_group="default"))
        again_rec = again.wait(timeout=300, show_progress=False)
        again.to_pandas()
        record("over HTTP: submit -> result in pandas (right after)", time.monotonic() - submitted)
        print(f"[node tier] consumers: HTTP {rec.consumer_id}, direct {local.record().consumer_id}, "
              f"HTTP again {again_rec.consumer_id}")

        assert list(over_http.columns) == ["user.id", *README_OUTPUT]
        assert over_http["user.f0"].notna().any(), over_http
        assert over_http.equals(in_direct_mode), f"over HTTP:\n{over_http}\ndirect:\n{in_direct_mode}"
        listed = {r.job_id for r in reader.jobs()}
        assert listed == {job.id, again.id}, "alice lists her jobs only, never the direct mode's (the OS user's)"
    assert (rec.consumer_id or "").startswith("jq-jobqueue-consumer-default-"), f"ran in a consumer pod: {rec}"
    assert "over HTTP: submit -> result in pandas (right after)" in node.times, "the session's summary has them"
