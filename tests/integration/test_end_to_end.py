"""End to end on one machine: SDK -> per-group queue -> manager-spawned consumer processes -> result."""

from __future__ import annotations

import asyncio
import json
import os

import psutil
import pyarrow as pa
import pytest

from jobqueue import AsyncJobQueueClient, JobQueueClient, JobStatus, ResourceRequests
from jobqueue.errors import JobStateError
from jobqueue.sample import sample_input
from tests.helpers import eventually, frozen, running_manager, with_groups
from tests.reference import assert_same, reference

OUTPUT = ["user.f0", "user.f1", "user.logins", "user.segment"]


async def test_async_queries_match_pandas_and_report_a_summary(settings, store, tmp_path):
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 2}})
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        inputs = [sample_input(store.users, 3_000, seed=s) for s in (1, 2)]
        jobs = await asyncio.gather(*(
            client.offline_query(ids, OUTPUT, times, resources=ResourceRequests(resource_group="default"))
            for ids, times in inputs
        ))
        for job, (ids, times) in zip(jobs, inputs, strict=True):
            record = await job.wait(timeout=60, show_progress=False)
            assert record.status is JobStatus.SUCCEEDED and record.progress == 1.0
            assert_same(await job.to_pandas(), reference(store, ids["user.id"], times, OUTPUT))
            s = job.performance_summary
            assert s is not None and s.rows_in == s.rows_out == 3_000
            assert s.spill_enabled and s.spilled_bytes == 0
            assert s.memory_limit_bytes > 0 and s.peak_memory_bytes > 0 and s.threads == 2
            assert s.queue_wait_seconds > 0 and s.execution_seconds > 0
            assert s.consumer_id.startswith("default-")
        # the consumer removes a job's staged input right after recording its outcome
        staging = settings.home / "staging"
        await eventually(lambda: not any(staging.rglob("*.parquet")), what="staged inputs removed")


async def test_tight_group_spills_and_stays_correct(settings, big_store, tmp_path):
    settings = with_groups(
        settings, tmp_path, {"tight": {"max_instances": 1, "memory": "320MiB", "memory_limit_percent": 30}},
        registry_path=big_store.registry_path,
    )
    ids, times = sample_input(big_store.users, 300_000, seed=9)
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(ids, OUTPUT, times, resources=ResourceRequests(resource_group="tight"))
        await job.wait(timeout=120, show_progress=False)
        s = job.performance_summary
        assert s.spill_enabled and s.spilled_bytes > 0
        assert s.memory_limit_bytes == int(320 * 2**20 * 0.30)  # ~96 MiB; the join needs ~190
        assert_same(await job.to_pandas(), reference(big_store, ids["user.id"], times, OUTPUT))


async def test_consumers_scale_zero_to_n_to_zero(settings, store, tmp_path):
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 2}, "other": {"max_instances": 1}})
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        await eventually(lambda: client.redis.exists(client.keys.groups), what="manager published groups")
        assert backend.consumers == {}
        ids, times = sample_input(store.users, 500)
        jobs = await asyncio.gather(*(
            client.offline_query(ids, ["user.f0"], times, resources=ResourceRequests(resource_group="default"))
            for _ in range(4)
        ))
        started = await eventually(lambda: len(backend.active("default")) == 2 and list(backend.consumers.values()),
                                   what="two consumers")
        pids = [c.pid for c in started]
        assert all(psutil.pid_exists(p) for p in pids)
        assert backend.active("other") == []  # an idle group stays at zero
        for job in jobs:
            assert (await job.wait(timeout=60, show_progress=False)).status is JobStatus.SUCCEEDED
        await eventually(lambda: not backend.consumers, timeout=30, what="scale back to zero")
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
        assert not await client.redis.hlen(client.keys.consumers("default")), "stopped consumers deregister"


async def test_cancel_a_queued_job(settings, store, tmp_path):
    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        paused = ResourceRequests(resource_group="paused")
        job = await client.offline_query({"user.id": [1]}, ["user.f0"], resources=paused)
        assert await job.status() is JobStatus.QUEUED
        record = await job.cancel()
        assert record.status is JobStatus.CANCELLED
        assert await client.redis.zcard(client.keys.queue("paused")) == 0
        assert (await job.cancel()).status is JobStatus.CANCELLED  # cancelling again is a no-op


async def test_sigterm_lets_a_busy_consumer_finish_its_job(settings, big_store, tmp_path):
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 1}}, registry_path=big_store.registry_path)
    ids, times = sample_input(big_store.users, 1_500_000, seed=4)
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(ids, OUTPUT, times)
        await eventually(lambda: _is(job, JobStatus.RUNNING), timeout=60, what="job running")
        (consumer,) = backend.active("default")
        with frozen(consumer.pid):  # the drain starts mid-query, however fast this machine runs it
            backend._stop(consumer)  # what a scale-down or pod deletion does: SIGTERM
        record = await job.wait(timeout=120, show_progress=False)
        assert record.status is JobStatus.SUCCEEDED and record.summary.rows_out == 1_500_000
        assert record.attempts == 1 and record.consumer_id == consumer.consumer_id, "finished by the drained consumer"
        assert consumer.process.wait(timeout=30) == 0
    lines = [json.loads(line) for line in (backend.log_dir / f"{consumer.consumer_id}.log").read_text().splitlines()
             if line.startswith("{")]
    drains = [line for line in lines if line.get("event", "").startswith("draining")]
    assert drains and drains[0]["running"] == [job.id], f"the drain began mid-query: {drains}"


async def _is(job, status):
    return await job.status() is status


def test_sync_client_and_in_process_mode(settings, store, tmp_path, redis_url):
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 1}})
    ids, times = sample_input(store.users, 1_000, seed=21)
    with JobQueueClient(settings) as client:
        local = client.offline_query(ids, ["user.f0"], times, run_asynchronously=False)
        assert local.status() is JobStatus.SUCCEEDED
        assert local.performance_summary.consumer_id == "in-process"
        assert_same(local.to_pandas(), reference(store, ids["user.id"], times, ["user.f0"]))

        async def serve_one():
            async with running_manager(settings), AsyncJobQueueClient(settings) as producer:
                handle = await producer.offline_query(ids, ["user.f0"], times)
                return handle.id, await handle.wait(timeout=60, show_progress=False)

        job_id, _ = asyncio.run(serve_one())
        handle = client.job(job_id)
        assert handle.status() is JobStatus.SUCCEEDED
        assert handle.to_arrow().equals(local.to_arrow())
        assert isinstance(handle.to_arrow(), pa.Table)
        with pytest.raises(JobStateError, match="is succeeded; it can no longer be cancelled"):
            handle.cancel()
    assert os.path.isdir(settings.home)
