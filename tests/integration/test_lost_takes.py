"""No job is stranded by a consumer that died around its take.

A consumer takes a queue entry (arq's in-progress lock) and only then claims the job record (running entry and
heartbeat, which the reaper watches). A consumer killed between the two, or after recording the job's end but
before arq took the entry off its queue, leaves a lock the reaper cannot see. The lock is a lease of a few heartbeat
TTLs, renewed with the heartbeat, so such an entry is taken again soon, not after the job timeout (hours); and an
entry whose record is still held by another consumer stays queued until the reaper has handed the job back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consumer.worker import build_worker
from jobqueue import AsyncJobQueueClient, JobStatus, ResourceRequests
from jobqueue.groups import load_groups
from jobqueue.jobstore import lock_lease_ms
from manager.backends.local import LocalBackend
from manager.reconcile import Reconciler
from tests.helpers import eventually, running_manager, with_groups, worker_running

HEARTBEAT_TTL = 1.0


@pytest.fixture
def settings(settings: Any) -> Any:
    """A short heartbeat, so the take's lease (`lock_lease_ms`: 3 s here) lapses within the tests."""
    return settings.model_copy(update={"job_heartbeat_ttl_seconds": HEARTBEAT_TTL})


async def take_and_die(settings: Any, arq_id: str) -> None:
    """A consumer takes `arq_id` by its own take and is gone before its job function runs (as SIGKILL leaves it)."""
    worker = build_worker(settings, "default", max_jobs=1)

    async def never_runs(job_id: str, score: int) -> None:
        await asyncio.Event().wait()

    worker.run_job = never_runs  # type: ignore[method-assign]
    try:
        await worker.start_jobs([arq_id.encode()])
        assert len(worker.tasks) == 1, "the dying consumer took the entry"
    finally:
        for task in worker.tasks.values():
            task.cancel()
        await worker.ctx["consumer"].redis.aclose()


async def test_a_job_taken_by_a_consumer_that_died_before_claiming_it_runs_once_the_takes_lease_is_over(settings):
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])
        lock = client.keys.arq_in_progress(job.id)
        await take_and_die(settings, client.keys.arq_id(job.id))
        lease = await client.redis.pttl(lock)
        assert 0 < lease <= lock_lease_ms(HEARTBEAT_TTL), f"the take's lock lives {lease} ms"
        async with worker_running(settings):
            record = await job.wait(timeout=30, show_progress=False)
    assert record.status is JobStatus.SUCCEEDED and record.attempts == 1


async def test_the_entry_of_a_job_that_ended_before_arq_finished_it_leaves_the_queue_without_a_rerun(settings):
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])
        keys, store = client.keys, client.store
        await take_and_die(settings, keys.arq_id(job.id))
        # the dead consumer had claimed the job and recorded its end; arq's finish (the entry's removal) never came
        assert (await store.claim(job.id, "dead-consumer", "default", HEARTBEAT_TTL)).claimed
        assert await store.mark_cancelled(job.id, owner="dead-consumer", release="default")

        async def entry_gone() -> bool:
            return await client.redis.zscore(keys.queue("default"), keys.arq_id(job.id)) is None

        async with worker_running(settings):
            await eventually(entry_gone, timeout=15, what="the stale entry removed")
        record = await client.get_job(job.id)
        assert not await client.redis.exists(keys.arq_in_progress(job.id), keys.arq_job(job.id))
    assert record.status is JobStatus.CANCELLED and record.attempts == 1


async def test_a_take_of_a_job_another_consumer_still_holds_keeps_it_queued_until_the_reaper_hands_it_back(settings):
    async with AsyncJobQueueClient(settings) as client:
        keys, store = client.keys, client.store
        job = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])
        # a consumer claimed it and died; its lock is gone (a lapsed lease), its heartbeat not yet
        assert (await store.claim(job.id, "dead-consumer", "default", heartbeat_ttl=5.0)).claimed
        async with worker_running(settings) as worker:
            await eventually(lambda: worker.jobs_complete + worker.jobs_retried + worker.jobs_failed, timeout=15,
                             what="a live consumer's take to end")
            assert not await client.redis.exists(keys.arq_in_progress(job.id))
            # the take claimed nothing, so it released nothing: the reaper still sees the lost consumer's claim
            assert await client.redis.hget(keys.running("default"), job.id) == b"dead-consumer"
            assert await client.redis.exists(keys.heartbeat(job.id))
            assert await client.redis.zscore(keys.queue("default"), keys.arq_id(job.id)) is not None, \
                "a take of a job still held elsewhere must leave its entry queued"
            assert (await client.get_job(job.id)).status is JobStatus.RUNNING
        async with running_manager(settings):  # its reaper sees the lapsed heartbeat and hands the job back
            record = await job.wait(timeout=60, show_progress=False)
    assert record.status is JobStatus.SUCCEEDED and record.attempts == 2
    assert "consumer dead-consumer lost" in record.errors[0]


async def test_the_manager_drops_a_stale_entry_instead_of_starting_a_consumer_of_a_group_scaled_to_zero(
        settings, tmp_path, arq_redis):
    """The entry of a job that ended just before its consumer was lost, once the take's lease is over: the manager
    counted it as ready and started a consumer of a group scaled to zero only for that consumer to drop it. Now its
    observation sees the job is over, its reaper drops the entry, and the group stays at zero."""
    settings = with_groups(settings, tmp_path, {"default": {"min_instances": 0, "max_instances": 2},
                                                "other": {"max_instances": 0}})
    async with AsyncJobQueueClient(settings) as client:
        keys, store = client.keys, client.store
        over = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])
        waiting = await client.offline_query({"user.id": [3]}, ["user.f0"], resources=ResourceRequests(
            resource_group="other"))
        await take_and_die(settings, keys.arq_id(over.id))
        assert (await store.claim(over.id, "dead-consumer", "default", HEARTBEAT_TTL)).claimed
        assert await store.mark_cancelled(over.id, owner="dead-consumer", release="default")
        assert not await store.drop_stale_entry("default", over.id), "the take's lock still holds it"
        assert not await store.drop_stale_entry("other", waiting.id), "a queued job's entry is not stale"

        async def lease_over() -> bool:
            return not await client.redis.exists(keys.arq_in_progress(over.id))

        await eventually(lease_over, timeout=15, what="the take's lease to lapse")
        backend = LocalBackend(settings)
        try:
            reconciler = Reconciler(arq_redis, settings, load_groups(settings.resource_groups_path), backend)
            await reconciler.tick()
            status = reconciler.last["default"]
            assert status.decision.replicas == 0 and not backend.active("default"), status
            assert status.observed.stale_entries == (over.id,) and status.observed.stats.ready == 0, status
        finally:
            await backend.aclose()
        assert await client.redis.zscore(keys.queue("default"), keys.arq_id(over.id)) is None
        assert not await client.redis.exists(keys.arq_job(over.id))
        assert await client.redis.zscore(keys.queue("other"), keys.arq_id(waiting.id)) is not None
        assert (await client.get_job(over.id)).status is JobStatus.CANCELLED
