"""Retention: nothing grows without bound.

A job's staged input goes when the job reaches a final state, whichever path gets it there (in-process run,
queued cancel, expiry in the queue, the reaper, a rejected payload, a consumer's outcome); a job that did not
succeed leaves no result folder. The manager's garbage collector is the safety net behind them: it removes
expired results, staged inputs no job needs and index entries of expired records, in bounded batches, on
local disk and S3 alike. `jobqueue gc --dry-run` shows what would go and removes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from jobqueue import (
    AsyncJobQueueClient,
    JobFailedError,
    JobQueueClient,
    JobStatus,
    ResourceRequests,
    ResultGoneError,
)
from jobqueue.jobstore import JobStore
from jobqueue.models import JobRecord
from jobqueue.settings import Settings
from jobqueue.storage import Storage, job_uri
from tests.helpers import eventually, running_manager, with_groups, worker_running
from tests.integration.test_worker_payloads import envelope

PAUSED = ResourceRequests(resource_group="paused")
HOUR = 3600.0


def has_folder(settings: Settings, root: str, job_id: str) -> bool:
    """Whether `<root>/<environment>/<job_id>/` exists, on local disk or S3."""
    storage = Storage(settings)
    fs, path = storage.resolve(storage.job_dir(root, job_id))
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def staged(settings: Settings, job_id: str) -> bool:
    return has_folder(settings, settings.staging, job_id)


def put(settings: Settings, root: str, job_id: str, name: str = "input.parquet") -> None:
    Storage(settings).write_table(pa.table({"a": [1]}), job_uri(root, settings.environment, job_id, name))


async def plant(settings: Settings, status: JobStatus, finished_ago: float | None = None, ttl: int | None = None,
                job_id: str | None = None, **fields) -> str:
    """A job record in `status` (finished `finished_ago` seconds ago), with its own record TTL."""
    job_id = job_id or uuid.uuid4().hex
    now = datetime.now(UTC)
    finished = now - timedelta(seconds=finished_ago) if finished_ago is not None else None
    async with AsyncJobQueueClient(settings) as client:
        store = JobStore(client.redis, client.keys, ttl or settings.job_ttl_seconds)
        await store.create(JobRecord(job_id=job_id, status=status, resource_group="default", output=["user.f0"],
                                     input_rows=1, submitted_at=now, finished_at=finished, **fields))
    return job_id


def collector(settings: Settings, redis, ahead: float = 0.0, **kwargs):
    from manager.gc import GarbageCollector

    return GarbageCollector(redis, settings, clock=lambda: time.time() + ahead, **kwargs)


# --- every path to a final state removes the staged input -------------------------------------------------------

def test_an_in_process_run_leaves_no_staged_input_and_a_failed_one_no_result_folder(settings):
    with JobQueueClient(settings) as client:
        result = client.offline_query({"user.id": [1, 2]}, ["user.f0"], run_asynchronously=False)
        assert len(result.to_pandas()) == 2  # the result stays, for the result TTL
        assert not staged(settings, result.id)
        with pytest.raises(Exception, match="BIGINT"):
            client.offline_query({"user.id": ["x"]}, ["user.f0"], run_asynchronously=False)
    assert Storage(settings).job_ids(settings.staging) == []
    assert Storage(settings).job_ids(settings.results) == [result.id]  # no empty folder of the failed run


async def test_cancelling_a_queued_job_removes_its_staged_input(settings, tmp_path):
    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1]}, ["user.f0"], resources=PAUSED)
        assert staged(settings, job.id)
        assert (await client.cancel(job.id)).status is JobStatus.CANCELLED
        assert not staged(settings, job.id)


async def test_expiry_in_the_queue_removes_the_staged_input(settings, tmp_path):
    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1]}, ["user.f0"], resources=PAUSED,
                                         completion_deadline=timedelta(seconds=0.3))
        assert staged(settings, job.id)
        with pytest.raises(JobFailedError) as info:
            await job.wait(timeout=30, show_progress=False)
        assert info.value.record.status is JobStatus.EXPIRED
        await eventually(lambda: not staged(settings, job.id), timeout=10, what="staged input removed")


async def test_a_job_the_reaper_fails_loses_its_staged_input_and_its_result_folder(settings, tmp_path):
    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1]}, ["user.f0"], resources=PAUSED, max_retries=0)
        # a consumer takes it, starts writing its result, and dies: its heartbeat lapses at once
        assert (await client.store.claim(job.id, "dead-consumer", "paused", 0.05)).claimed
        put(settings, settings.results, job.id, ".result.parquet.0123.tmp")
        async with running_manager(settings):
            with pytest.raises(JobFailedError) as info:
                await job.wait(timeout=30, show_progress=False)
            assert "consumer dead-consumer lost" in info.value.record.error
            await eventually(lambda: not staged(settings, job.id), timeout=10, what="staged input removed")
        assert not has_folder(settings, settings.results, job.id)


async def test_a_rejected_payload_removes_the_staged_input(settings):
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1]}, ["user.f0"])
        payload = json.loads(await client.redis.get(client.keys.arq_job(job.id)))
        payload["k"]["job"]["environment"] = "elsewhere"  # a payload the consumer must refuse
        await client.redis.set(client.keys.arq_job(job.id), envelope(payload["k"]))
        async with worker_running(settings):
            with pytest.raises(JobFailedError) as info:
                await job.wait(timeout=30, show_progress=False)
        assert info.value.record.error.startswith("malformed job payload")
        assert not staged(settings, job.id)


async def test_a_failed_job_leaves_no_result_folder(settings):
    async with AsyncJobQueueClient(settings) as client:
        bad = await client.offline_query({"user.id": ["x"]}, ["user.f0"])  # fails in the join, not retried
        async with worker_running(settings):
            with pytest.raises(JobFailedError):
                await bad.wait(timeout=30, show_progress=False)
    assert not staged(settings, bad.id)
    assert not has_folder(settings, settings.results, bad.id)


# --- the garbage collector ---------------------------------------------------------------------------------------

async def test_gc_prunes_index_entries_of_expired_records(settings):
    alive = await plant(settings, JobStatus.QUEUED, completion_deadline=datetime.now(UTC) + timedelta(days=30))
    gone = await plant(settings, JobStatus.QUEUED, ttl=1, completion_deadline=datetime.now(UTC) + timedelta(days=30))
    async with AsyncJobQueueClient(settings) as client:
        keys, redis = client.keys, client.redis
        await redis.hset(keys.schedules, "nightly", "{}")
        await redis.zadd(keys.schedule_runs("nightly"), {alive: 1, gone: 2})
        await eventually(lambda: _not(redis.exists(keys.job(gone))), timeout=10, what="the short record expired")
        report = await collector(settings, redis).run_once()
        assert report.removed["jobs_index"] == [gone]
        assert report.removed["deadlines"] == [gone] and report.removed["schedule_runs"] == [gone]
        for key in (keys.jobs_index, keys.deadlines, keys.schedule_runs("nightly")):
            assert [m.decode() for m in await redis.zrange(key, 0, -1)] == [alive], key


async def _not(value) -> bool:
    return not await value


async def test_gc_removes_results_after_the_result_ttl_and_leftover_folders(settings):
    settings = settings.model_copy(update={"result_ttl_seconds": int(2 * HOUR), "gc_grace_seconds": HOUR})
    old = await plant(settings, JobStatus.SUCCEEDED, finished_ago=3 * HOUR)
    recent = await plant(settings, JobStatus.SUCCEEDED, finished_ago=60)
    running = await plant(settings, JobStatus.RUNNING)
    failed = await plant(settings, JobStatus.FAILED, finished_ago=2 * HOUR)  # a killed attempt's temp file
    cancelled_now = await plant(settings, JobStatus.CANCELLED, finished_ago=1)
    no_record = uuid.uuid4().hex  # an in-process run's result, or a record that expired
    for job_id in (old, recent, running, no_record):
        put(settings, settings.results, job_id, "result.parquet")
    for job_id in (failed, cancelled_now):
        put(settings, settings.results, job_id, ".result.parquet.abc.tmp")
    async with AsyncJobQueueClient(settings) as client:
        report = await collector(settings, client.redis).run_once()
        assert report.removed["result"] == [old] and report.removed["result_folder"] == [failed]
        later = await collector(settings, client.redis, ahead=3 * HOUR).run_once()
    assert sorted(later.removed["result"]) == sorted([recent, no_record])
    assert later.removed["result_folder"] == [cancelled_now]
    assert Storage(settings).job_ids(settings.results) == [running]


async def test_a_result_removed_after_its_ttl_says_so_when_read(settings):
    settings = settings.model_copy(update={"result_ttl_seconds": int(HOUR)})
    job_id = uuid.uuid4().hex
    await plant(settings, JobStatus.SUCCEEDED, finished_ago=2 * HOUR, job_id=job_id,
                result_uri=job_uri(settings.results, settings.environment, job_id, "result.parquet"))
    put(settings, settings.results, job_id, "result.parquet")
    async with AsyncJobQueueClient(settings) as client:
        assert (await client.job(job_id).to_arrow()).num_rows == 1
        assert (await collector(settings, client.redis).run_once()).removed["result"] == [job_id]
        with pytest.raises(ResultGoneError, match=r"JOBQUEUE_RESULT_TTL_SECONDS \(3600 s\)"):
            await client.job(job_id).to_arrow()


async def gc_of_orphaned_staged_inputs(settings):
    final = await plant(settings, JobStatus.SUCCEEDED, finished_ago=1)
    queued = await plant(settings, JobStatus.QUEUED)
    orphan = uuid.uuid4().hex  # staged by a submission that never wrote its record (or whose record expired)
    for job_id in (final, queued, orphan):
        put(settings, settings.staging, job_id)
    async with AsyncJobQueueClient(settings) as client:
        first = await collector(settings, client.redis).run_once()
        assert first.removed["staged_input"] == [final]  # the orphan is younger than the grace: maybe in flight
        later = await collector(settings, client.redis, ahead=settings.gc_grace_seconds + 1).run_once()
        assert later.removed["staged_input"] == [orphan]
    assert Storage(settings).job_ids(settings.staging) == [queued]


async def test_gc_removes_staged_inputs_no_job_needs(settings):
    await gc_of_orphaned_staged_inputs(settings)


async def test_gc_on_s3(s3_settings):
    await gc_of_orphaned_staged_inputs(s3_settings)
    old = await plant(s3_settings, JobStatus.SUCCEEDED, finished_ago=8 * 24 * HOUR)
    recent = await plant(s3_settings, JobStatus.SUCCEEDED, finished_ago=1)
    for job_id in (old, recent):
        put(s3_settings, s3_settings.results, job_id, "result.parquet")
    async with AsyncJobQueueClient(s3_settings) as client:
        report = await collector(s3_settings, client.redis).run_once()
    assert report.removed["result"] == [old]
    assert not has_folder(s3_settings, s3_settings.results, old) and has_folder(s3_settings, s3_settings.results,
                                                                                recent)


async def test_gc_works_in_bounded_batches(settings):
    settings = settings.model_copy(update={"gc_batch_size": 10, "gc_grace_seconds": 0})
    for _ in range(25):
        put(settings, settings.staging, uuid.uuid4().hex)
    async with AsyncJobQueueClient(settings) as client:
        gc = collector(settings, client.redis)
        counts = [len((await gc.run_once()).removed["staged_input"]) for _ in range(4)]
    assert counts == [10, 10, 5, 0]
    assert Storage(settings).job_ids(settings.staging) == []


async def test_the_manager_collects_garbage_as_it_runs(settings, tmp_path):
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 0}},
                           gc_interval_seconds=0.2, gc_grace_seconds=0)
    orphan = uuid.uuid4().hex
    put(settings, settings.staging, orphan)
    async with running_manager(settings):
        await eventually(lambda: not staged(settings, orphan), timeout=30, what="the orphan collected")


def gc_cli(settings: Settings, *args: str) -> tuple[int, str]:
    """`jobqueue gc ...` as an operator runs it, in a subprocess with only these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_REDIS_URL=settings.redis_url, JOBQUEUE_ENVIRONMENT=settings.environment,
               JOBQUEUE_HOME=str(settings.home), JOBQUEUE_GC_GRACE_SECONDS=str(settings.gc_grace_seconds),
               COLUMNS="250")
    p = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", "gc", *args], env=env, capture_output=True,
                       text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


async def test_gc_cli_dry_run_lists_and_removes_nothing_then_a_run_removes(settings):
    settings = settings.model_copy(update={"gc_grace_seconds": 0})
    orphans = sorted(uuid.uuid4().hex for _ in range(3))
    for job_id in orphans:
        put(settings, settings.staging, job_id)
    gone = await plant(settings, JobStatus.QUEUED, ttl=1)
    async with AsyncJobQueueClient(settings) as client:
        await eventually(lambda: _not(client.redis.exists(client.keys.job(gone))), timeout=10, what="expiry")
    code, out = await asyncio.to_thread(gc_cli, settings, "--dry-run", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["dry_run"] and report["removed"]["staged_input"] == 3 and report["removed"]["jobs_index"] == 1
    assert report["ids"]["staged_input"] == orphans and report["ids"]["jobs_index"] == [gone]
    code, out = await asyncio.to_thread(gc_cli, settings, "--dry-run")
    assert code == 0 and "would remove" in out and orphans[0] in out, out
    assert Storage(settings).job_ids(settings.staging) == orphans  # nothing removed
    async with AsyncJobQueueClient(settings) as client:
        assert [m.decode() for m in await client.redis.zrange(client.keys.jobs_index, 0, -1)] == [gone]
    code, out = await asyncio.to_thread(gc_cli, settings, "--json")
    assert code == 0 and json.loads(out)["removed"]["staged_input"] == 3, out
    assert Storage(settings).job_ids(settings.staging) == []
    async with AsyncJobQueueClient(settings) as client:
        assert await client.redis.zrange(client.keys.jobs_index, 0, -1) == []
