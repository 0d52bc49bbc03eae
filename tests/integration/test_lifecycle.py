"""Job lifecycle on real consumer processes: crash recovery, retries, deadlines, cancel while running."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from pydantic import SecretStr

from consumer.job import WATCH_SECONDS
from jobqueue import AsyncJobQueueClient, JobFailedError, JobStatus, ResourceRequests
from jobqueue.sample import sample_input
from tests.helpers import consumers_registered, eventually, free_port, frozen, running_manager, with_groups
from tests.reference import assert_same, reference

OUTPUT = ["user.f0", "user.f1", "user.logins", "user.segment"]


def lifecycle_settings(settings, tmp_path, store, groups):
    return with_groups(
        settings, tmp_path, groups, registry_path=store.registry_path,
        job_heartbeat_ttl_seconds=1.5, retry_backoff_seconds=0.1,
    )



async def status_is(job, *statuses):
    return (await job.record()).status in statuses


async def test_killed_consumer_mid_query_job_completes_on_another(settings, big_store, tmp_path):
    settings = lifecycle_settings(settings, tmp_path, big_store, {"default": {"max_instances": 1}})
    ids, times = sample_input(big_store.users, 1_500_000, seed=31)
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(ids, OUTPUT, times)
        await eventually(lambda: status_is(job, JobStatus.RUNNING), timeout=60, what="job running")
        (victim,) = backend.active("default")
        os.kill(victim.pid, signal.SIGKILL)
        record = await job.wait(timeout=120, show_progress=False)
        assert record.status is JobStatus.SUCCEEDED
        assert record.attempts == 2
        assert len(record.errors) == 1 and f"consumer {victim.consumer_id} lost" in record.errors[0]
        assert record.consumer_id != victim.consumer_id
        assert_same(await job.to_pandas(), reference(big_store, ids["user.id"], times, OUTPUT))


async def test_retryable_failure_is_retried_until_max_retries(settings, store, tmp_path):
    # an object store that refuses connections is a transient failure: retried, then failed with every attempt's error
    registry = store.read_registry()
    for src in registry["namespaces"]["user"]["sources"]:
        src["path"] = f"s3://unreachable/store/{src['path']}"
    (tmp_path / "registry-s3.yaml").write_text(yaml.safe_dump(registry))
    settings = lifecycle_settings(settings, tmp_path, store, {"default": {"max_instances": 1}})
    settings = settings.model_copy(update={
        "registry_path": tmp_path / "registry-s3.yaml", "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",
        "s3_region": "us-east-1", "s3_access_key_id": "test", "s3_secret_access_key": SecretStr("test"),
    })
    ids, times = sample_input(store.users, 1_000, seed=3)
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(ids, OUTPUT, times, max_retries=1)
        with pytest.raises(JobFailedError) as info:
            await job.wait(timeout=60, show_progress=False)
    record = info.value.record
    assert record.attempts == 2 and len(record.errors) == 2, record
    assert all("Could not connect" in e for e in record.errors), record.errors
    assert record.errors[0].startswith("attempt 1: OSError") and record.errors[1].startswith("attempt 2: OSError")


async def test_deterministic_failure_is_not_retried(settings, store, tmp_path):
    settings = lifecycle_settings(settings, tmp_path, store, {"default": {"max_instances": 1}})
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": ["x"]}, ["user.f0"], max_retries=5)
        with pytest.raises(JobFailedError) as info:
            await job.wait(timeout=60, show_progress=False)
    record = info.value.record
    assert record.attempts == 1 and "is BIGINT but the input's 'user.id' is VARCHAR" in record.error


async def test_deadline_expires_a_queued_job(settings, store, tmp_path):
    settings = lifecycle_settings(settings, tmp_path, store, {"paused": {"max_instances": 0}})
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1]}, ["user.f0"], completion_deadline=timedelta(seconds=0.5),
                                         resources=ResourceRequests(resource_group="paused"))
        with pytest.raises(JobFailedError) as info:
            await job.wait(timeout=30, show_progress=False)
        assert info.value.record.status is JobStatus.EXPIRED
        assert "while queued" in info.value.record.error
        assert await client.redis.zcard(client.keys.queue("paused")) == 0


async def test_deadline_interrupts_a_running_query(settings, big_store, tmp_path):
    spilling = {"min_instances": 1, "max_instances": 1, "memory": "320MiB", "memory_limit_percent": 30}
    settings = lifecycle_settings(settings, tmp_path, big_store, {"default": spilling})
    settings = settings.model_copy(update={"job_heartbeat_ttl_seconds": 30})  # frozen below, yet not lost
    ids, times = sample_input(big_store.users, 1_500_000, seed=8)
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        await consumers_registered(client.redis, client.keys, "default", 1, timeout=60)  # the job starts at once
        job = await client.offline_query(ids, OUTPUT, times, completion_deadline=timedelta(seconds=3))
        await eventually(lambda: status_is(job, JobStatus.RUNNING), timeout=3, what="job running before its deadline")
        (consumer,) = backend.active("default")
        with frozen(consumer.pid):  # the deadline passes mid-query, however fast this machine runs it
            deadline = (await job.record()).completion_deadline
            assert deadline is not None
            await asyncio.sleep((deadline - datetime.now(UTC)).total_seconds() + 0.05)
        with pytest.raises(JobFailedError) as info:
            await job.wait(timeout=60, show_progress=False)
        record = info.value.record
        assert record.status is JobStatus.EXPIRED and "while running" in record.error, record.error
        assert record.attempts == 1
        assert not list(settings.spill_root.glob("q-*")), "the query's temp directory is removed"


async def test_cancel_a_running_query_removes_its_temp_files(settings, big_store, tmp_path):
    settings = lifecycle_settings(
        settings, tmp_path, big_store,
        {"default": {"max_instances": 1, "memory": "320MiB", "memory_limit_percent": 30}},  # spills
    ).model_copy(update={"job_heartbeat_ttl_seconds": 30})  # frozen below, yet not lost
    ids, times = sample_input(big_store.users, 1_500_000, seed=12)
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(ids, OUTPUT, times)
        await eventually(lambda: status_is(job, JobStatus.RUNNING), timeout=60, what="job running")
        (consumer,) = backend.active("default")
        with frozen(consumer.pid):  # requested mid-query, however fast this machine runs it
            await job.cancel(wait=None)
            await asyncio.sleep(WATCH_SECONDS)  # the watcher's next tick is due as the consumer resumes
        record = await job.cancel(wait=30)
        assert record.status is JobStatus.CANCELLED
        assert not list(settings.spill_root.glob("q-*")), "the query's temp directory is removed"
        staging = settings.home / "staging"  # removed right after the outcome is recorded
        await eventually(lambda: not any(staging.rglob("*.parquet")), what="staged input removed")
        assert not (settings.home / "results" / job.id).exists(), "no empty result folder of a cancelled job"


async def test_drain_grace_exceeded_hands_the_job_back_without_using_a_retry(settings, big_store, tmp_path):
    spilling = {"max_instances": 1, "memory": "320MiB", "memory_limit_percent": 30}
    settings = lifecycle_settings(settings, tmp_path, big_store, {"default": spilling})
    settings = settings.model_copy(update={"consumer_drain_seconds": 0})  # cut off at once, however fast the query
    ids, times = sample_input(big_store.users, 1_500_000, seed=19)
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(ids, OUTPUT, times, max_retries=0)
        await eventually(lambda: status_is(job, JobStatus.RUNNING), timeout=60, what="job running")
        (first,) = backend.active("default")
        backend._stop(first)  # SIGTERM: no grace, so the query is cut off and handed back
        record = await job.wait(timeout=120, show_progress=False)
        assert first.process.wait(timeout=30) == 0
    assert record.status is JobStatus.SUCCEEDED  # with max_retries=0, a counted attempt would have failed it
    assert record.attempts == 1 and record.errors == []
    assert record.consumer_id != first.consumer_id


async def test_a_full_spill_volume_fails_the_query_clearly_and_the_consumer_serves_the_next(settings, big_store,
                                                                                            tmp_path):
    spill = tmp_path / "spill"
    spill.mkdir()
    reserve = shutil.disk_usage(spill).free - (2 << 20)  # leaves DuckDB about 2 MiB of temp space
    group = {"max_instances": 1, "memory": "320MiB", "memory_limit_percent": 30,
             "env": {"JOBQUEUE_SPILL_RESERVE_BYTES": str(reserve), "JOBQUEUE_SPILL_DIRECTORY": str(spill)}}
    settings = lifecycle_settings(settings, tmp_path, big_store, {"default": group})
    ids, times = sample_input(big_store.users, 1_500_000, seed=21)
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        big = await client.offline_query(ids, OUTPUT, times, max_retries=0)
        with pytest.raises(JobFailedError) as info:
            await big.wait(timeout=120, show_progress=False)
        error = info.value.record.error
        assert "spill space exhausted" in error and "JOBQUEUE_SPILL_RESERVE_BYTES" in error
        (consumer,) = backend.active("default")
        small = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])
        record = await small.wait(timeout=60, show_progress=False)
        assert record.status is JobStatus.SUCCEEDED and record.consumer_id == consumer.consumer_id
        assert consumer.process.poll() is None
        assert not list(spill.glob("q-*")), "the failed query's temp directory is removed"
