"""Local consumers' memory: a real memory cgroup per consumer holds the group's limit, the default fits
`max_instances` consumers on the machine, and a kernel OOM kill is named in the job's error and counted.

Tests that need a memory cgroup skip, with the reason `detect()` gives, where none can be made here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from jobqueue import AsyncJobQueueClient, ResourceRequests
from jobqueue.engine.resources import physical_memory_bytes
from jobqueue.groups import ResourceGroup
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from manager.backends.local import LocalBackend
from manager.backends.local_cgroup import CgroupUnavailable, cgroup_name, detect, join_in_child, remove
from manager.backends.local_memory import default_consumer_memory
from manager.observe import read_groups
from tests.helpers import eventually, running_manager, with_groups

MIB = 1 << 20


def _cgroup_unavailable() -> str | None:
    """Why no memory cgroup can be made and joined here (None: it can)."""
    try:
        cgroups = detect()
        path = cgroups.create(f"jobqueue.probe.{os.getpid()}", 64 * MIB)
    except (CgroupUnavailable, OSError) as e:
        return f"no memory cgroup can be made here: {e}"
    try:
        subprocess.run(["true"], preexec_fn=join_in_child(path), check=True)
    except (subprocess.SubprocessError, OSError) as e:
        return f"a child cannot join a memory cgroup here: {e}"
    finally:
        remove(path)
    return None


UNAVAILABLE = _cgroup_unavailable()
needs_cgroup = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")


def cgroup_of(pid: int) -> Path:
    """The memory cgroup directory a process is in, read from /proc (not from our own bookkeeping)."""
    cgroups = detect()
    root = cgroups.parent
    while root.name and not (root / "cgroup.controllers").exists() and root.parent != root and (
            root.parent / "memory.limit_in_bytes").exists():
        root = root.parent  # up to the hierarchy's mount
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (cgroups.version == "v1" and "memory" in controllers.split(",")) or (
                cgroups.version == "v2" and controllers == ""):
            return root / path.lstrip("/")
    raise AssertionError(f"pid {pid} has no memory cgroup line")


def limit_of(path: Path) -> int:
    name = "memory.max" if (path / "memory.max").exists() else "memory.limit_in_bytes"
    return int((path / name).read_text())


def peak_of(path: Path) -> int:
    name = "memory.peak" if (path / "memory.peak").exists() else "memory.max_usage_in_bytes"
    return int((path / name).read_text())


async def environ_of(pid: int) -> dict[str, str]:
    """The environment `pid` was started with. Popen returns once the child's exec has closed its file descriptors,
    a moment before the kernel lays out the new image's environment: until then /proc/<pid>/environ reads empty
    (5-7% of reads right after Popen, measured), so it is read until it is not."""
    async def read() -> bytes:
        return Path(f"/proc/{pid}/environ").read_bytes()

    items = (await eventually(read, timeout=10, what=f"/proc/{pid}/environ")).split(b"\0")
    return dict(i.decode().split("=", 1) for i in items if b"=" in i)


async def final(client: AsyncJobQueueClient, job_id: str, timeout: float):
    async def done():
        record = await client.get_job(job_id)
        return record if record.status.is_final else None

    return await eventually(done, timeout=timeout, what=f"job {job_id} final")


async def started(settings, group: ResourceGroup, n: int = 1) -> LocalBackend:
    backend = LocalBackend(settings)
    redis = connect_redis(settings)
    try:
        observed = (await read_groups(redis, Keys.for_environment(settings.environment), [group.name], time.time(),
                                      15))[group.name]
    finally:
        await redis.aclose()
    await backend.converge(group, n, observed)
    return backend


@needs_cgroup
async def test_each_consumer_runs_in_a_cgroup_holding_its_groups_memory_and_the_cgroup_goes_with_it(settings):
    backend = await started(settings, ResourceGroup(name="small", max_instances=2, memory=512 * MIB), 2)
    try:
        consumers = backend.active("small")
        paths = [cgroup_of(c.pid) for c in consumers]
        assert len(set(paths)) == 2, "one cgroup per consumer"
        for c, path in zip(consumers, paths, strict=True):
            assert path.name == cgroup_name(settings.environment, c.consumer_id)
            assert limit_of(path) == 512 * MIB, "the kernel holds the group's memory, not only DuckDB"
            assert (await environ_of(c.pid))["JOBQUEUE_CONTAINER_MEMORY_BYTES"] == str(512 * MIB)
    finally:
        await backend.aclose(timeout=30)
    assert not any(p.exists() for p in paths), "a consumer's cgroup is removed when it exits"


@needs_cgroup
async def test_a_consumer_sees_its_cgroup_limit_without_being_told(settings, tmp_path):
    """container_memory_bytes() follows /proc/self/cgroup: on a host (no cgroup namespace) the mount root is
    not the process's cgroup, and reading only the root saw no limit (physical RAM)."""
    cgroups = detect()
    path = cgroups.create(cgroup_name(settings.environment, "probe"), 300 * MIB)
    try:
        out = subprocess.run(
            [sys.executable, "-c", "from jobqueue.engine.resources import container_memory_bytes as c; print(c()[0])"],
            preexec_fn=join_in_child(path), capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    finally:
        remove(path)
    assert int(out.stdout) == 300 * MIB


@needs_cgroup
async def test_a_big_query_stays_under_the_groups_memory(settings, tmp_path):
    """The issue's case: a 512 MiB group's consumer peaked at 555 MiB, because only DuckDB was told. Now its
    cgroup is 512 MiB, and a query that needs about 590 MiB unconstrained still succeeds within it."""
    settings = with_groups(settings, tmp_path, {"small": {"min_instances": 1, "max_instances": 1, "memory": "512MiB"}})
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        (consumer,) = await eventually(lambda: backend.active("small"), what="the consumer")
        path = cgroup_of(consumer.pid)
        job = await client.offline_query({"user.id": [i % 100_000 for i in range(2_000_000)]},
                                          ["user.f0", "user.f1", "user.f2", "user.logins", "user.segment"],
                                          resources=ResourceRequests(resource_group="small"), max_retries=0)
        record = await job.wait(timeout=120)
        limit, peak = limit_of(path), peak_of(path)
    print(f"\n512 MiB group, 2M-row query: cgroup peak {peak / MIB:.0f} MiB")
    assert record.status.value == "succeeded", record.error
    assert limit == 512 * MIB and peak <= 512 * MIB, f"peak {peak / MIB:.0f} MiB"
    assert record.summary.memory_limit_bytes == int(512 * MIB * settings.query_memory_limit_percent / 100)


@needs_cgroup
async def test_an_oom_killed_consumer_fails_its_job_as_out_of_memory_and_is_counted(settings, tmp_path):
    """DuckDB may use 100% of a 256 MiB group, on top of the consumer's own ~90 MiB: the kernel kills it."""
    settings = with_groups(
        settings, tmp_path,
        {"tight": {"min_instances": 0, "max_instances": 1, "memory": "256MiB", "memory_limit_percent": 100}},
        job_heartbeat_ttl_seconds=1.5)
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [i % 100_000 for i in range(2_000_000)]},
                                         ["user.f0", "user.f1", "user.f2", "user.logins", "user.segment"],
                                         resources=ResourceRequests(resource_group="tight"), max_retries=0)
        record = await final(client, job.id, 180)
        counted = await client.redis.hget(client.keys.counters, "oom_kills:tight")
        assert backend.memory.pending_kills == [], "the kill was handed to Redis"
    assert record.status.value == "failed"
    assert record.error.startswith("attempt 1: out of memory at 256.0 MiB (consumer tight-"), record.error
    assert record.error.endswith("; raise memory or lower memory_limit_percent")
    assert int(counted) == 1


@needs_cgroup
async def test_an_oom_killed_job_is_retried_when_retries_allow(settings, tmp_path):
    settings = with_groups(
        settings, tmp_path,
        {"tight": {"min_instances": 0, "max_instances": 1, "memory": "256MiB", "memory_limit_percent": 100}},
        job_heartbeat_ttl_seconds=1.5, retry_backoff_seconds=0.1)
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [i % 100_000 for i in range(2_000_000)]},
                                         ["user.f0", "user.f1", "user.f2", "user.logins", "user.segment"],
                                         resources=ResourceRequests(resource_group="tight"), max_retries=1)
        record = await final(client, job.id, 240)
        counted = await client.redis.hget(client.keys.counters, "oom_kills:tight")
    assert record.status.value == "failed" and record.attempts == 2
    assert [e.split(" (")[0] for e in record.errors] == ["attempt 1: out of memory at 256.0 MiB",
                                                          "attempt 2: out of memory at 256.0 MiB"]
    assert int(counted) == 2


async def test_the_default_memory_fits_max_instances_consumers_on_the_machine(settings):
    group = ResourceGroup(name="wide", max_instances=4)  # no `memory`
    share = default_consumer_memory(physical_memory_bytes(), settings.local_memory_share_percent, 4)
    assert 0 <= int(physical_memory_bytes() * 0.8 / 4) - share < MIB
    assert 4 * share <= physical_memory_bytes()
    backend = await started(settings, group)
    try:
        (consumer,) = backend.active("wide")
        assert (await environ_of(consumer.pid))["JOBQUEUE_CONTAINER_MEMORY_BYTES"] == str(share)
        if UNAVAILABLE is None:
            assert limit_of(cgroup_of(consumer.pid)) == share
    finally:
        await backend.aclose(timeout=30)


async def test_without_cgroups_consumers_run_unenforced_with_one_warning_per_group(settings, tmp_path):
    settings = settings.model_copy(update={"local_cgroup_parent": tmp_path / "no-such-cgroup"})
    with structlog.testing.capture_logs() as events:
        backend = await started(settings, ResourceGroup(name="small", max_instances=2, memory=512 * MIB), 2)
        try:
            consumers = backend.active("small")
            assert len(consumers) == 2 and all(c.process.poll() is None for c in consumers)
            memory = [(await environ_of(c.pid))["JOBQUEUE_CONTAINER_MEMORY_BYTES"] for c in consumers]
            assert memory == [str(512 * MIB)] * 2
        finally:
            await backend.aclose(timeout=30)
    warnings = [e for e in events if e["event"].startswith("consumer memory is not enforced")]
    assert len(warnings) == 1 and warnings[0]["group"] == "small" and "no-such-cgroup" in warnings[0]["reason"]
    assert backend.memory.enforcement == "none"
