"""Waiting is driven by events: `wait()` blocks on the job's finish event, and an idle consumer wakes on a
submission. Slow safety polls catch what a lost message misses. Real consumers, real Redis."""

from __future__ import annotations

import asyncio
import time

import pytest

from jobqueue import AsyncJobQueueClient, JobFailedError
from jobqueue.finish_watch import CONNECTION_NAME
from jobqueue.models import JobStatus
from tests.helpers import eventually, worker_running

INPUT = {"user.id": [1, 2, 3]}
OUTPUT = ["user.f0"]


async def waiting_clients(redis, job_id: str) -> list[str]:
    """The ids of the connections `wait()` subscribed to the job's finish with (by their name)."""
    name = CONNECTION_NAME.format(job_id=job_id)
    return [str(c["id"]) for c in await redis.client_list() if c.get("name") == name and c.get("sub") == "1"]


async def submit_queued(client: AsyncJobQueueClient) -> str:
    handle = await client.offline_query(INPUT, OUTPUT)
    return handle.id


async def test_wait_returns_at_the_finish_event_not_at_a_poll(settings):
    settings = settings.model_copy(update={"wait_poll_seconds": 30.0})
    async with AsyncJobQueueClient(settings) as client:
        job_id = await submit_queued(client)  # no consumer yet: it stays queued
        waiter = asyncio.create_task(client.job(job_id).wait(show_progress=False))
        await eventually(lambda: waiting_clients(client.redis, job_id), timeout=10,
                         what="wait() subscribed to the job's finish")
        async with worker_running(settings):
            record = await asyncio.wait_for(waiter, 20)
            returned = time.time()
    assert record.status is JobStatus.SUCCEEDED and record.finished_at is not None
    assert returned - record.finished_at.timestamp() < 2.0  # the safety poll (30 s) played no part


async def test_a_missed_finish_event_is_caught_by_the_safety_poll(settings):
    settings = settings.model_copy(update={"wait_poll_seconds": 1.0})
    async with AsyncJobQueueClient(settings) as client:
        job_id = await submit_queued(client)
        waiter = asyncio.create_task(client.job(job_id).wait(show_progress=False))
        await eventually(lambda: waiting_clients(client.redis, job_id), timeout=10, what="the subscription")
        # the job fails without its event (as a consumer of a version that does not publish it would)
        await client.redis.hset(client.keys.job(job_id), "status", JobStatus.FAILED.value)
        changed = time.monotonic()
        with pytest.raises(JobFailedError):
            await asyncio.wait_for(waiter, 10)
        assert time.monotonic() - changed < 1.0 + 2.0


async def test_a_killed_subscription_is_made_again_and_the_finish_still_seen_at_once(settings):
    settings = settings.model_copy(update={"wait_poll_seconds": 30.0})
    async with AsyncJobQueueClient(settings) as client:
        job_id = await submit_queued(client)
        waiter = asyncio.create_task(client.job(job_id).wait(show_progress=False))
        first = await eventually(lambda: waiting_clients(client.redis, job_id), timeout=10, what="the subscription")
        await client.redis.execute_command("CLIENT", "KILL", "ID", first[0])
        await eventually(lambda: _new_subscription(client.redis, job_id, first[0]), timeout=10,
                         what="wait() subscribing again")
        assert await client.store.mark_failed(job_id, "failed on purpose")  # publishes the finish
        finished = time.monotonic()
        with pytest.raises(JobFailedError):
            await asyncio.wait_for(waiter, 10)
        assert time.monotonic() - finished < 2.0  # not the 30 s safety poll


async def _new_subscription(redis, job_id: str, old: str) -> list[str]:
    return [c for c in await waiting_clients(redis, job_id) if c != old]


async def test_an_idle_consumer_takes_a_new_job_at_once(settings):
    settings = settings.model_copy(update={"consumer_poll_seconds": 30.0})  # its poll would take 30 s
    async with AsyncJobQueueClient(settings) as client, worker_running(settings):
        first = await client.offline_query(INPUT, OUTPUT)
        await asyncio.wait_for(first.wait(show_progress=False), 60)  # the consumer is now idle, between polls
        handle = await client.offline_query(INPUT, OUTPUT)
        submitted = time.time()
        record = await asyncio.wait_for(handle.wait(show_progress=False), 60)
    assert record.started_at is not None
    assert record.started_at.timestamp() - submitted < 2.0
