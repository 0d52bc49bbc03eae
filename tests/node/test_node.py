"""Consumers as real pods on a real node: the chart installed with helm, queries submitted with the SDK from
the host, the manager in its pod scaling the consumer Deployment, the kubelet starting, probing, signalling
and OOM-killing the containers. Timings are printed (`-s` shows them; the session prints them all at the end).

The issues's steps: 1-2 are the `node` fixture (tests/node/conftest.py), 3 the first two tests, 4 the drain,
5 the OOM kill, 6 scale-from-zero, 7 the fixture's teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client import CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

from jobqueue import AsyncJobQueueClient, JobFailedError, JobStatus, ResourceRequests
from jobqueue.sample import sample_input
from manager.backends.kube_objects import HTTP_PORT
from tests.helpers import eventually
from tests.node.conftest import NAMESPACE, Node
from tests.node.timings import record

OUTPUT = ["user.f0", "user.f1", "user.logins", "user.segment"]
pytestmark = pytest.mark.timeout(900)


@dataclass
class PodTimes:
    """When the test first saw a pod in each state (monotonic clock of the test process)."""

    created: float | None = None
    scheduled: float | None = None
    running: float | None = None
    ready: float | None = None
    consumer_ready: float | None = None  # the consumer's own /readyz answered 200 (polled from the host)
    exited: float | None = None  # deleted, and every container seen terminated (`exit_codes`)
    exit_codes: list[int] = field(default_factory=list)
    finished_at: datetime | None = None  # when the last container exited, as the kubelet reported it (1 s resolution)
    gone: float | None = None  # no longer listed: the kubelet confirmed the removal (its status sync, every 10 s)
    last: dict[str, Any] = field(default_factory=dict)


class PodWatcher:
    """Polls a group's pods every 0.1 s through the API and keeps when each reached each state."""

    def __init__(self, api: Any, group: str) -> None:
        self.core = CoreV1Api(api)
        self.selector = f"jobqueue.io/group={group}"
        self.pods: dict[str, PodTimes] = {}
        self.max_ready = 0  # pods whose Ready condition was True at once (the kubelet probes every 10 s)
        self.max_serving = 0  # pods at once whose consumer answered its own /readyz to the test, not yet exited
        self._task: asyncio.Task[None] | None = None
        self.last_poll = 0.0  # monotonic time of the last list that answered
        self.errors: list[str] = []  # lists that failed (the loop goes on; a failure message shows them)

    async def poll(self) -> None:
        reply = await self.core.list_namespaced_pod(NAMESPACE, label_selector=self.selector, _request_timeout=10)
        now = self.last_poll = time.monotonic()
        seen = set()
        ready_now = 0
        for pod in reply.items:
            name = pod.metadata.name
            seen.add(name)
            t = self.pods.setdefault(name, PodTimes(created=now))
            if pod.spec.node_name and t.scheduled is None:
                t.scheduled = now
            statuses = pod.status.container_statuses or []
            if any(s.state and s.state.running for s in statuses) and t.running is None:
                t.running = now
            ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            if ready:
                ready_now += 1
                if t.ready is None:
                    t.ready = now
            ended = [s.state.terminated for s in statuses if s.state and s.state.terminated]
            if pod.metadata.deletion_timestamp and statuses and len(ended) == len(statuses) and t.exited is None:
                t.exited, t.exit_codes = now, [e.exit_code for e in ended]
                t.finished_at = max((e.finished_at for e in ended if e.finished_at), default=None)
            probe = t.running is not None and t.consumer_ready is None and pod.status.pod_ip
            if probe and await _readyz(pod.status.pod_ip):
                t.consumer_ready = time.monotonic()
            t.last = pod.to_dict()
        for name, t in self.pods.items():
            if name not in seen and t.gone is None:
                t.gone = now
        self.max_ready = max(self.max_ready, ready_now)
        serving = sum(1 for name, t in self.pods.items()
                      if name in seen and t.consumer_ready is not None and t.exited is None)
        self.max_serving = max(self.max_serving, serving)

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll()
            except (ApiException, aiohttp.ClientError, TimeoutError) as e:  # a slow or restarting API server
                self.errors.append(f"{time.monotonic():.1f}: {type(e).__name__}: {e}"[:300])
            await asyncio.sleep(0.1)

    def describe(self, name: str) -> str:
        """What the watcher last saw of a pod, and whether it is still seeing anything: for a failure message."""
        last = self.pods[name].last if name in self.pods else {}
        meta, status = last.get("metadata") or {}, last.get("status") or {}
        containers = [{"name": c.get("name"), "state": c.get("state"), "ready": c.get("ready")}
                      for c in status.get("container_statuses") or []]
        return (f"pod {name}: phase={status.get('phase')} deletion_timestamp={meta.get('deletion_timestamp')} "
                f"grace={meta.get('deletion_grace_period_seconds')} containers={containers}; "
                f"watcher's last answered list {time.monotonic() - self.last_poll:.1f} s ago, "
                f"failed lists: {self.errors[-5:]}")

    async def until_exited(self, name: str, timeout: float, node: Node) -> float:
        """When the deleted pod's containers were all seen terminated (or the pod gone, if no poll saw them in
        between); a timeout says what the pod and the node were doing."""
        t = self.pods[name]
        try:
            await eventually(lambda: t.exited or t.gone, timeout=timeout, what=f"pod {name}'s containers exited")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.describe(name)}\n{node.logs()}") from None
        return min(x for x in (t.exited, t.gone) if x is not None)

    async def __aenter__(self) -> PodWatcher:
        await self.poll()
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def live(self) -> list[str]:
        """Pods that may run a consumer: a deleted pod whose containers have exited is none, though the kubelet
        may take a while to confirm its removal."""
        return [n for n, t in self.pods.items() if t.gone is None and t.exited is None]


async def _readyz(ip: str) -> bool:
    """The consumer's readiness endpoint, straight over the bridge: what the kubelet's probe asks, without
    waiting for the probe's period."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as session, \
                session.get(f"http://{ip}:{HTTP_PORT}/readyz") as reply:
            return reply.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


@pytest.fixture
async def client(node: Node) -> AsyncIterator[AsyncJobQueueClient]:
    async with AsyncJobQueueClient(node.settings()) as c:
        await eventually(lambda: c.known_groups(), timeout=120, what="the manager pod publishing the groups")
        yield c


async def no_pods(watcher: PodWatcher, timeout: float = 120) -> None:
    try:
        await eventually(lambda: not watcher.live(), timeout=timeout, what=f"no pods for {watcher.selector}")
    except AssertionError as e:
        raise AssertionError("\n".join([str(e), *(watcher.describe(name) for name in watcher.live())])) from None


async def test_spilling_queries_run_in_two_pods_named_as_their_consumers_and_the_group_scales_0_2_0(
        node: Node, client: AsyncJobQueueClient, api: Any) -> None:
    async with PodWatcher(api, "default") as pods:
        await no_pods(pods)
        started = time.monotonic()
        inputs = [sample_input(node.store.users, 300_000, seed=s) for s in (1, 2, 3, 4)]
        jobs = [await client.offline_query(ids, OUTPUT, times, resources=ResourceRequests(resource_group="default"))
                for ids, times in inputs]
        records = [await job.wait(timeout=600, show_progress=False) for job in jobs]
        record("4 spilling queries (300k rows each) on 0->2 pods", time.monotonic() - started)
        # two consumers at once: each pod's consumer answered /readyz while the other pod was there. (The pod's Ready
        # condition is no measure: the kubelet probes every 10 s, and a pod that took its queries at once may be
        # done with them before its second probe, so two pods are seldom both Ready at one poll on a loaded node.)
        assert pods.max_serving == 2, (f"2 consumer pods serving at once, saw {pods.max_serving} (Ready at once: "
                                       f"{pods.max_ready})\n{node.logs()}")
        names = set(pods.pods)
        for job, rec in zip(jobs, records, strict=True):
            assert rec.status is JobStatus.SUCCEEDED, rec
            assert rec.consumer_id in names, f"consumer_id {rec.consumer_id} is not a pod name: {sorted(names)}"
            s = job.performance_summary
            assert s is not None and s.rows_out == 300_000
            assert s.spill_enabled and s.spilled_bytes > 0, "DuckDB spilled to the pod's emptyDir"
            assert s.memory_limit_bytes == int(512 * 2**20 * 19 / 100), "memory from the pod's cgroup limit"
            print(f"[node tier] {rec.consumer_id}: spilled {s.spilled_bytes} bytes, peak {s.peak_memory_bytes}")
        df = await jobs[0].to_pandas()
        assert len(df) == 300_000
        for t in pods.pods.values():
            spec = t.last["spec"]
            assert spec["containers"][0]["security_context"]["read_only_root_filesystem"] is True
            assert spec["security_context"]["run_as_user"] == 10001
            assert spec["node_selector"] == {"jobqueue.io/pool": "nvme"}
        deployment = node.kubectl("get", "deploy", "-o", "name")
        assert "deployment.apps/jq-jobqueue-consumer-default" in deployment
        started = time.monotonic()
        await no_pods(pods)
        record("idle pods scaled back to 0", time.monotonic() - started)


async def test_drain_on_the_kubelets_sigterm_finishes_the_running_query(
        node: Node, client: AsyncJobQueueClient, api: Any) -> None:
    """Deleting the busy pod (what a scale-down past the deletion cost, an eviction or a node drain does):
    the kubelet sends SIGTERM and the consumer finishes its query within the grace period (60 s here;
    the consumer's drain is 45 s) or hands it back. Either way the job succeeds on its first attempt."""
    async with PodWatcher(api, "default") as pods:
        await no_pods(pods)
        ids, times = sample_input(node.store.users, 1_500_000, seed=19)
        job = await client.offline_query(ids, OUTPUT, times, max_retries=0,
                                         resources=ResourceRequests(resource_group="default"))
        running = await eventually(
            lambda: _running_on(job), timeout=300, what="the query running in a pod")
        # ...and the kubelet has reported its container running. A pod deleted before that status got its SIGTERM
        # only 80 s later (containerd's StopContainer, in one CI run; the consumer then exited within 77 ms)
        await eventually(lambda: running in pods.pods and pods.pods[running].running, timeout=60,
                         what=f"the kubelet reporting pod {running}'s container running")
        assert await _running_on(job) == running, "the query ended before the kubelet reported its pod running"
        with node.following_logs(running) as pod_log:
            deleted, deleted_at = time.monotonic(), datetime.now(UTC)
            node.kubectl("delete", "pod", running, "--wait=false")
            rec = await job.wait(timeout=300, show_progress=False)
            finished = time.monotonic()
            exited = await pods.until_exited(running, timeout=120, node=node)
        drained = pod_log.read_text(errors="replace").partition("draining")[2][-6000:]  # the consumer's last lines
        record("drain: SIGTERM -> query finished", finished - deleted)
        record("drain: SIGTERM -> container seen exited", exited - deleted)
        finished_at = pods.pods[running].finished_at  # None if no poll saw it between exit and removal
        if finished_at is not None:
            record("drain: SIGTERM -> container exited (the kubelet's finishedAt, 1 s resolution)",
                   (finished_at - deleted_at).total_seconds())
        assert rec.status is JobStatus.SUCCEEDED and rec.attempts == 1 and rec.errors == [], rec
        print(f"[node tier] drained query ran on {rec.consumer_id}; the deleted pod was {running}")
        codes = pods.pods[running].exit_codes
        assert codes in ([0], []), f"the consumer exited with {codes} (137: killed at the grace period's end)" \
                                   f"; its log from the drain on: {drained}"
        assert exited - deleted < 60, "the consumer exited within terminationGracePeriodSeconds (no SIGKILL)" \
                                      f"; its log from the drain on: {drained}"
        # the pod object's removal is the kubelet's (clean-up, then its status sync every 10 s): recorded, and a
        # removal still pending a minute later is reported (a CI run once saw one pending over two minutes)
        with contextlib.suppress(AssertionError):
            await eventually(lambda: pods.pods[running].gone, timeout=60)
        gone = pods.pods[running].gone
        if gone is None:
            print(f"[node tier] the kubelet had not removed the exited pod a minute later: {pods.describe(running)}")
        else:
            record("drain: SIGTERM -> pod gone", gone - deleted)
        await no_pods(pods)


async def _running_on(job: Any) -> str | None:
    rec = await job.record()
    return rec.consumer_id if rec.status is JobStatus.RUNNING and rec.consumer_id else None


async def test_a_query_beyond_the_memory_limit_gets_the_pod_oomkilled_and_the_job_names_it(
        node: Node, client: AsyncJobQueueClient, api: Any) -> None:
    async with PodWatcher(api, "oom") as pods:
        ids, times = sample_input(node.store.users, 1_500_000, seed=23)
        job = await client.offline_query(ids, OUTPUT, times, max_retries=0,
                                         resources=ResourceRequests(resource_group="oom"))
        with pytest.raises(JobFailedError) as info:
            await job.wait(timeout=600, show_progress=False)
        error = info.value.record.error or ""
        print(f"[node tier] OOM job error: {error}")
        reasons = [s["last_state"]["terminated"]["reason"]
                   for t in pods.pods.values() for s in t.last["status"].get("container_statuses") or []
                   if (s.get("last_state") or {}).get("terminated")]
        assert "OOMKilled" in reasons, f"{reasons}\n{node.logs()}"
        assert "out of memory" in error, error
        await no_pods(pods)


async def test_scale_from_zero_p50_split_into_scheduling_container_start_and_consumer_ready(
        node: Node, client: AsyncJobQueueClient, api: Any) -> None:
    """submit -> pod created (manager + Deployment controller) -> scheduled -> container running -> the
    consumer's /readyz answers -> the first byte of the result, over 5 trials from zero pods. The pod's
    Ready condition waits for the kubelet's probe (period 10 s) and a consumer takes work before it: a pod
    may finish its query and be scaled away before it is ever Ready, so Ready is printed when seen."""
    phases: dict[str, list[float]] = {k: [] for k in (
        "submit->pod created", "created->scheduled", "scheduled->container running",
        "running->consumer ready", "submit->consumer ready", "submit->result first byte")}
    async with PodWatcher(api, "default") as pods:
        for trial in range(5):
            await no_pods(pods)
            before = set(pods.pods)
            ids, times = sample_input(node.store.users, 2_000, seed=100 + trial)
            submitted = time.monotonic()
            job = await client.offline_query(ids, ["user.f0"], times,
                                             resources=ResourceRequests(resource_group="default"))
            rec = await job.wait(timeout=300, show_progress=False)
            table = await job.to_arrow()
            first_byte = time.monotonic()
            assert rec.status is JobStatus.SUCCEEDED and len(table) == 2_000
            assert rec.consumer_id not in before, "a new pod each trial"
            pod = pods.pods[rec.consumer_id]
            assert None not in (pod.created, pod.scheduled, pod.running, pod.consumer_ready), pod
            phases["submit->pod created"].append(pod.created - submitted)
            phases["created->scheduled"].append(pod.scheduled - pod.created)
            phases["scheduled->container running"].append(pod.running - pod.scheduled)
            phases["running->consumer ready"].append(pod.consumer_ready - pod.running)
            phases["submit->consumer ready"].append(pod.consumer_ready - submitted)
            phases["submit->result first byte"].append(first_byte - submitted)
            ready = f"{pod.ready - submitted:.2f}" if pod.ready else "not seen"
            print(f"[node tier] trial {trial}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in phases.items())
                  + f", submit->pod Ready condition {ready}")
        await no_pods(pods)
    for name, values in phases.items():
        record(f"scale-from-zero p50 {name}", statistics.median(values))
