"""The Kubernetes backend against kmock's emulator over real HTTP (tests/kube_emulator.py), Redis real.

Ticks are driven by hand: queue load and busy consumers are written to Redis in the wire format
(jobqueue/keys.py), then one reconcile tick must leave the emulated cluster in the expected state.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import kmock
import pytest
import yaml
from kubernetes_asyncio.client import ApiClient, Configuration
from prometheus_client import generate_latest

from jobqueue.groups import load_groups_config
from jobqueue.models import JobRecord, JobStatus
from manager.backends.kube_objects import CONFIG_HASH, DELETION_COST
from manager.backends.kubernetes import KubernetesBackend
from manager.leader import LeaseElector
from manager.reaper import OOM_CLOCK_SLACK_SECONDS
from manager.reconcile import Reconciler
from tests.helpers import eventually, mark_busy, queue
from tests.kube_emulator import PODS, ClusterEmulator

DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
NS = "jq"


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[ClusterEmulator, str]]:
    async with ClusterEmulator() as emulator, kmock.Server(emulator) as server:
        yield emulator, str(server.url).rstrip("/")


def api_client(url: str) -> ApiClient:
    return ApiClient(Configuration(host=url))


@pytest.fixture
def kube_settings(settings):
    return settings.model_copy(update={
        "scaler_backend": "kubernetes", "kubernetes_namespace": NS, "kubernetes_consumer_image": "jobqueue:test",
        "scale_down_stabilization_seconds": 0.0, "scale_to_zero_cooldown_seconds": 0.0,
        "kubernetes_lease_seconds": 3,
    })


def write_groups(path, groups, defaults=None):
    path.write_text(yaml.safe_dump({"resource_groups": groups, **({"defaults": defaults} if defaults else {})}))


@pytest.fixture
async def manager(cluster, kube_settings, arq_redis, tmp_path) -> AsyncIterator[Reconciler]:
    _, url = cluster
    path = tmp_path / "groups.yaml"
    write_groups(path, {"etl": {"max_instances": 3}, "adhoc": {"max_instances": 2}})
    backend = KubernetesBackend(kube_settings, api_client(url))
    reconciler = Reconciler(arq_redis, kube_settings, load_groups_config(path), backend, groups_path=path)
    yield reconciler
    await backend.aclose()


def deployments(emulator: ClusterEmulator) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in emulator.items(DEPLOYMENTS, NS)}


def pods(emulator: ClusterEmulator, group: str) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in emulator.items(PODS, NS, f"jobqueue.io/group={group}")}


async def test_deployments_are_created_on_demand_and_follow_the_queue(cluster, manager, arq_redis):
    emulator, _ = cluster
    keys = manager.keys
    await manager.tick()
    assert deployments(emulator) == {}, "a group that never had work gets no Deployment"

    await queue(arq_redis, keys, "etl", 2)
    await manager.tick()
    (dep,) = deployments(emulator).values()
    assert dep["metadata"]["name"] == "jobqueue-consumer-etl" and dep["spec"]["replicas"] == 2
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "jobqueue-manager"
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "jobqueue:test"
    assert container["args"] == ["--resource-group", "etl", "--max-jobs", "1"]
    assert {"name": "JOBQUEUE_CONSUMER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container[
        "env"]
    assert len(pods(emulator, "etl")) == 2

    await queue(arq_redis, keys, "etl", 5, start=2)  # 7 jobs, max 3
    await manager.tick()
    assert deployments(emulator)["jobqueue-consumer-etl"]["spec"]["replicas"] == 3
    writes = len(emulator.scale_writes)
    await manager.tick()
    assert len(emulator.scale_writes) == writes, "nothing is written when the cluster already matches"

    await arq_redis.delete(keys.queue("etl"))
    await manager.tick()
    assert deployments(emulator)["jobqueue-consumer-etl"]["spec"]["replicas"] == 0
    assert pods(emulator, "etl") == {}
    state = manager.last["etl"]
    assert (state.current, state.decision.replicas, state.decision.reason) == (3, 0, "idle")


async def test_scale_down_marks_busy_pods_and_never_goes_below_them(cluster, manager, arq_redis):
    emulator, _ = cluster
    keys = manager.keys
    await queue(arq_redis, keys, "etl", 3)
    await manager.tick()
    names = sorted(pods(emulator, "etl"))
    busy = names[1]
    await arq_redis.delete(keys.queue("etl"))
    await mark_busy(arq_redis, keys, "etl", busy, "long-query")
    await manager.tick()
    assert deployments(emulator)["jobqueue-consumer-etl"]["spec"]["replicas"] == 1
    (survivor,) = pods(emulator, "etl").values()
    assert survivor["metadata"]["name"] == busy, "the ReplicaSet removed the idle pods, not the busy one"
    assert survivor["metadata"]["annotations"][DELETION_COST] == "1000000"
    assert manager.last["etl"].decision.replicas == 1  # the busy pod's in-flight job


async def test_config_change_is_reapplied_and_a_removed_group_drains_then_goes(cluster, manager, arq_redis, tmp_path):
    emulator, _ = cluster
    keys = manager.keys
    await queue(arq_redis, keys, "etl", 1)
    await queue(arq_redis, keys, "adhoc", 2)
    await manager.tick()
    before = deployments(emulator)["jobqueue-consumer-etl"]
    write_groups(tmp_path / "groups.yaml", {"etl": {"max_instances": 3, "env": {"JOBQUEUE_LOG_LEVEL": "debug"},
                                                    "node_selector": {"pool": "nvme"}}})
    (busy,) = [n for n in pods(emulator, "adhoc")][:1]
    await arq_redis.delete(keys.queue("adhoc"))
    await mark_busy(arq_redis, keys, "adhoc", busy, "adhoc-running")
    await manager.tick()

    after = deployments(emulator)["jobqueue-consumer-etl"]
    assert after["metadata"]["annotations"][CONFIG_HASH] != before["metadata"]["annotations"][CONFIG_HASH]
    assert after["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "nvme"}
    assert {"name": "JOBQUEUE_LOG_LEVEL", "value": "debug"} in after["spec"]["template"]["spec"]["containers"][0][
        "env"]
    assert after["spec"]["replicas"] == 1
    adhoc = deployments(emulator)["jobqueue-consumer-adhoc"]
    assert adhoc["spec"]["replicas"] == 1 and list(pods(emulator, "adhoc")) == [busy], "removed, but busy: kept"

    await arq_redis.delete(keys.running("adhoc"), keys.queue("adhoc"))  # the query finished
    await manager.tick()
    assert deployments(emulator)["jobqueue-consumer-adhoc"]["spec"]["replicas"] == 0
    await manager.tick()
    assert "jobqueue-consumer-adhoc" not in deployments(emulator)
    assert "adhoc" not in await manager.redis.hkeys(keys.groups) and "etl" in {
        k.decode() for k in await manager.redis.hkeys(keys.groups)}


async def test_conflicts_and_server_errors_are_retried(cluster, manager, arq_redis):
    emulator, _ = cluster
    emulator.fail("PATCH", "deployments", 409)
    emulator.fail("PATCH", "deployments", 500, times=2)
    await queue(arq_redis, manager.keys, "etl", 2)
    await manager.tick()
    assert deployments(emulator)["jobqueue-consumer-etl"]["spec"]["replicas"] == 2
    assert manager.last["etl"].decision.reason == "queue"


async def test_a_failing_group_is_reported_and_does_not_stop_the_others(cluster, manager, arq_redis):
    emulator, _ = cluster
    emulator.fail("PATCH", "deployments", 503, times=4)  # more than one call's retries
    await queue(arq_redis, manager.keys, "adhoc", 1)
    await queue(arq_redis, manager.keys, "etl", 1)
    await manager.tick()
    failed = [g for g in ("adhoc", "etl") if manager.last[g].decision.reason == "error"]
    assert len(failed) == 1 and "503" in manager.last[failed[0]].decision.detail
    (ok,) = {"adhoc", "etl"} - set(failed)
    assert deployments(emulator)[f"jobqueue-consumer-{ok}"]["spec"]["replicas"] == 1
    state = await manager.redis.hget(manager.keys.group_states, failed[0])
    assert b"503" in state
    await manager.tick()  # the next tick converges
    assert deployments(emulator)[f"jobqueue-consumer-{failed[0]}"]["spec"]["replicas"] == 1


async def test_a_broken_group_config_is_reported_while_the_others_run(cluster, manager, arq_redis, tmp_path):
    emulator, _ = cluster
    write_groups(tmp_path / "groups.yaml", {"etl": {"max_instances": 3},
                                            "adhoc": {"resources": {"limits": {"memory": "lots"}}}})
    await queue(arq_redis, manager.keys, "etl", 1)
    await manager.tick()
    assert deployments(emulator)["jobqueue-consumer-etl"]["spec"]["replicas"] == 1
    assert manager.last["adhoc"].decision.reason == "config_error"
    assert "'adhoc'" in manager.last["adhoc"].decision.detail and "not a Kubernetes quantity" in manager.last[
        "adhoc"].decision.detail
    assert manager.metrics.groups.values["adhoc"].group_config_error == 1  # jobqueue_group_config_error


async def test_exactly_one_leader_and_handover(cluster, kube_settings):
    _, url = cluster
    apis = [api_client(url), api_client(url)]
    a, b = (LeaseElector(api, kube_settings, identity=name) for api, name in zip(apis, ("a", "b"), strict=True))
    try:
        a.start()
        await eventually(a.is_leader, timeout=10, what="a leads")
        b.start()
        await asyncio.sleep(0)  # b campaigns against a held lease
        assert a.is_leader() and not b.is_leader()
        started = time.monotonic()
        await a.stop(release=False)  # a dies without giving the lease up
        await eventually(b.is_leader, timeout=10, what="b takes over")
        took = time.monotonic() - started
        assert took <= kube_settings.kubernetes_lease_seconds + 2, took
        assert not a.is_leader()
        a = LeaseElector(apis[0], kube_settings, identity="a")
        a.start()
        await b.stop()  # graceful: released at once, a takes over without waiting out the lease
        await eventually(a.is_leader, timeout=kube_settings.kubernetes_lease_seconds, what="a takes over")
    finally:
        await a.stop()
        await b.stop()
        for api in apis:
            await api.close()


async def test_a_standby_manager_does_not_act_but_stays_healthy_and_ready(cluster, kube_settings, arq_redis, tmp_path):
    emulator, url = cluster
    path = tmp_path / "groups.yaml"
    write_groups(path, {"etl": {"max_instances": 3}})
    backend = KubernetesBackend(kube_settings, api_client(url))
    standby = Reconciler(arq_redis, kube_settings, load_groups_config(path), backend, leader=lambda: False)
    await backend.start()  # as run_manager does before campaigning
    await queue(arq_redis, standby.keys, "etl", 2)
    stop = asyncio.Event()
    loop = asyncio.create_task(standby.run(stop))
    try:
        for _ in range(3):  # three tick periods
            started = standby.last_tick_at
            await eventually(lambda s=started: standby.last_tick_at > s, what="the standby loop turning")
        assert deployments(emulator) == {} and standby.last == {}
        assert standby.metrics.leader._value.get() == 0
        assert standby.healthy() and await standby.ready()
    finally:
        stop.set()
        await loop
        await backend.aclose()


async def test_a_hung_api_server_costs_a_timeout_not_the_loop(cluster, kube_settings, arq_redis, tmp_path):
    emulator, url = cluster
    settings = kube_settings.model_copy(update={"kubernetes_request_timeout_seconds": 0.5})
    path = tmp_path / "groups.yaml"
    write_groups(path, {"etl": {"max_instances": 3}})
    backend = KubernetesBackend(settings, api_client(url))
    manager = Reconciler(arq_redis, settings, load_groups_config(path), backend)
    try:
        await queue(arq_redis, manager.keys, "etl", 2)
        emulator.fail("PATCH", "deployments", None, times=2, delay=3.0)  # two calls hang past the timeout
        started = time.monotonic()
        await manager.tick()
        assert time.monotonic() - started < 3.0, "the tick was not held by the hung calls"
        assert deployments(emulator)["jobqueue-consumer-etl"]["spec"]["replicas"] == 2
        emulator.fail("PATCH", "deployments", None, times=10, delay=3.0)  # longer than the retries
        await queue(arq_redis, manager.keys, "etl", 1, start=2)
        await manager.tick()
        assert manager.last["etl"].decision.reason == "error" and "Timeout" in manager.last["etl"].decision.detail
        emulator.faults.clear()  # the API recovers: the next tick converges
        await manager.tick()
        assert deployments(emulator)["jobqueue-consumer-etl"]["spec"]["replicas"] == 3
    finally:
        await backend.aclose()


async def test_a_leader_that_cannot_renew_steps_down_and_scaling_resumes_after(cluster, kube_settings, arq_redis,
                                                                               tmp_path):
    """The API refuses every Lease renewal: the leader steps down within the lease and stops acting;
    once the API recovers, a leader is elected again and the queue is scaled."""
    emulator, url = cluster
    path = tmp_path / "groups.yaml"
    write_groups(path, {"etl": {"max_instances": 3}})
    api = api_client(url)
    elector = LeaseElector(api, kube_settings, identity="a")
    backend = KubernetesBackend(kube_settings, api_client(url))
    manager = Reconciler(arq_redis, kube_settings, load_groups_config(path), backend, leader=elector.is_leader)
    stop = asyncio.Event()
    loop: asyncio.Task[None] | None = None
    try:
        await backend.start()
        elector.start()
        await eventually(elector.is_leader, timeout=10, what="a leads")
        emulator.fail("PUT", "leases", 500, times=10_000)  # every renewal (and every new campaign) fails
        lost_at = time.monotonic()
        await eventually(lambda: not elector.is_leader(), timeout=10, what="a steps down")
        assert time.monotonic() - lost_at <= kube_settings.kubernetes_lease_seconds + 2
        loop = asyncio.create_task(manager.run(stop))
        await queue(arq_redis, manager.keys, "etl", 2)
        for _ in range(3):  # three tick periods without the Lease: nothing is created
            started = manager.last_tick_at
            await eventually(lambda s=started: manager.last_tick_at > s, what="the loop turning")
        assert deployments(emulator) == {}
        emulator.faults.clear()  # the API recovers
        await eventually(elector.is_leader, timeout=15, what="a leads again")
        await eventually(lambda: deployments(emulator).get("jobqueue-consumer-etl", {}).get("spec", {}).get(
            "replicas") == 2, timeout=15, what="the queue scaled once leading again")
    finally:
        stop.set()
        if loop is not None:
            await loop
        await elector.stop()
        await backend.aclose()
        await api.close()


async def _running_job(store, keys, redis, group: str, pod: str, max_retries: int) -> str:
    """A job claimed by `pod` (as its consumer does), whose heartbeat then lapses."""
    job_id = uuid.uuid4().hex
    await store.create(JobRecord(job_id=job_id, status=JobStatus.QUEUED, resource_group=group, output=["user.f0"],
                                 input_rows=1, submitted_at=datetime.now(UTC), max_retries=max_retries))
    assert (await store.claim(job_id, pod, group, heartbeat_ttl=60)).claimed
    await redis.delete(keys.heartbeat(job_id))  # the container is gone: nobody renews it
    return job_id


async def test_an_oom_killed_pod_names_out_of_memory_in_its_jobs_errors(cluster, manager, arq_redis, tmp_path):
    emulator, _ = cluster
    keys = manager.keys
    write_groups(tmp_path / "groups.yaml", {"etl": {"max_instances": 3, "memory": "1Gi"},
                                            "adhoc": {"max_instances": 2}})
    await queue(arq_redis, keys, "etl", 2)
    await manager.tick()
    oom, lost = sorted(pods(emulator, "etl"))
    store = manager.reaper.store
    failed = await _running_job(store, keys, arq_redis, "etl", oom, max_retries=0)
    retried = await _running_job(store, keys, arq_redis, "etl", oom, max_retries=1)
    other = await _running_job(store, keys, arq_redis, "etl", lost, max_retries=0)
    killed_at = time.time() + 1
    await emulator.oom_kill_pod(NS, oom, killed_at)  # the kubelet's clock: seconds, maybe a bit ahead
    await manager.tick()

    record = await store.get(failed)
    assert record.status.value == "failed"
    assert record.error == (f"attempt 1: out of memory at 1.0 GiB (consumer {oom} was killed by the kernel); "
                            "raise memory or lower memory_limit_percent")
    record = await store.get(retried)
    assert record.status.value == "queued" and record.errors[0].startswith("attempt 1: out of memory at 1.0 GiB")
    record = await store.get(other)
    assert record.status.value == "failed" and "lost (no heartbeat" in record.error, "another pod: no OOM"
    assert await arq_redis.hget(keys.counters, "oom_kills:etl") == b"1", "one kill, counted once for two jobs"

    # a job claimed once the kill is clearly in the past (beyond the clock slack): the restarted container's
    await eventually(lambda: time.time() > int(killed_at) + OOM_CLOCK_SLACK_SECONDS, timeout=5,
                     what="the kill to be past the clock slack")
    later = await _running_job(store, keys, arq_redis, "etl", oom, max_retries=0)
    await manager.tick()
    assert "lost (no heartbeat" in (await store.get(later)).error, "the kill before it started is not its cause"
    assert await arq_redis.hget(keys.counters, "oom_kills:etl") == b"1"
    text = generate_latest(manager.metrics.registry).decode()
    assert 'jobqueue_consumer_oom_kills_total{group="etl"} 1.0' in text
