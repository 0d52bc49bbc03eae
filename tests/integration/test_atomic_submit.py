"""Submitting is one transaction: the record and the queue entry exist together, or neither does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from jobqueue import AsyncJobQueueClient, RedisUnavailableError
from jobqueue.models import JobRecord, JobStatus
from jobqueue.submit_store import DuplicateJobId
from tests.helpers import free_port


def record(job_id: str) -> JobRecord:
    return JobRecord(job_id=job_id, status=JobStatus.QUEUED, resource_group="default", output=["user.f0"],
                     input_rows=1, submitted_at=datetime.now(UTC))


async def test_a_submission_is_a_record_and_a_queue_entry_together(settings):
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1]}, ["user.f0"])
        r = client.redis
        assert await r.hget(client.keys.job(job.id), "status") == b"queued"
        assert await r.zscore(client.keys.queue("default"), client.keys.arq_id(job.id)) is not None
        arq_job = client.keys.arq_job(job.id)
        assert arq_job == f"arq:job:jobqueue:{settings.environment}:{job.id}"  # per environment
        assert await r.exists(arq_job) and await r.pttl(arq_job) > 0


async def test_a_duplicate_id_writes_nothing_and_keeps_what_was_accepted(settings):
    j1 = uuid.uuid4().hex
    async with AsyncJobQueueClient(settings) as client:
        store, queue = client.store, client.keys.queue("default")
        assert await store.submit(record(j1), queue, b"first", 60_000)
        await client.redis.hset(client.keys.job(j1), "progress", "0.5")  # the accepted job moves on
        with pytest.raises(DuplicateJobId, match=f"{j1} already exists; nothing was submitted"):
            await store.submit(record(j1), queue, b"second", 60_000)
        assert await client.redis.get(client.keys.arq_job(j1)) == b"first"
        assert await client.redis.hget(client.keys.job(j1), "progress") == b"0.5"
        assert await store.submit(record(j1), queue, b"third", 60_000, exclusive=True) is False
        assert await client.redis.get(client.keys.arq_job(j1)) == b"first"


async def test_an_arq_job_without_a_record_is_not_overwritten(settings):
    j2 = uuid.uuid4().hex
    async with AsyncJobQueueClient(settings) as client:
        await client.redis.set(client.keys.arq_job(j2), b"someone else's")
        with pytest.raises(DuplicateJobId):
            await client.store.submit(record(j2), client.keys.queue("default"), b"mine", 60_000)
        assert not await client.redis.exists(client.keys.job(j2))


async def test_unreachable_redis_is_a_clear_error_without_credentials(settings):
    settings = settings.model_copy(update={"redis_url": f"redis://jq:hunter2@127.0.0.1:{free_port()}/3"})
    async with AsyncJobQueueClient(settings) as client:
        with pytest.raises(RedisUnavailableError) as info:
            await client.offline_query({"user.id": [1]}, ["user.f0"])
        message = str(info.value)
        assert f"cannot reach Redis at redis://127.0.0.1:{settings.redis_url.rsplit(':', 1)[1]}" in message
        assert "the query was not submitted" in message and "JOBQUEUE_REDIS_URL" in message
        assert "hunter2" not in message and "jq" not in message.split("(")[0]
        assert isinstance(info.value, ConnectionError)
