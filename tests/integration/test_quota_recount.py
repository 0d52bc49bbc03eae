"""The quota recount (`manager/quota_recount.py`): a job record that expires before its job ends leaves its owner's
and team's unfinished-jobs counts one too high for good (no final transition releases them), until a quota refuses
submissions nobody holds. The recount lowers such counts to what the live records show, loses no submission made
while it runs, and runs in the manager every JOBQUEUE_QUOTA_RECOUNT_SECONDS."""

from __future__ import annotations

import asyncio

import pytest

from jobqueue import AsyncJobQueueClient, QuotaExceededError
from manager.quota_recount import QuotaRecount
from tests.helpers import eventually

ROWS = {"user.id": [1, 2]}


async def active(client: AsyncJobQueueClient) -> dict[str, int]:
    raw = await client.redis.hgetall(client.keys.active_jobs)
    return {k.decode(): int(v) for k, v in raw.items()}


async def expire(client: AsyncJobQueueClient, job_id: str) -> None:
    """What JOBQUEUE_JOB_TTL_SECONDS does to a record whose job has not ended."""
    assert await client.redis.delete(client.keys.job(job_id)) == 1


async def test_a_drifted_count_is_repaired(settings):
    settings = settings.model_copy(update={"quota_max_queued_per_owner": 2})
    async with AsyncJobQueueClient(settings) as client:
        first, second = [await client.offline_query(ROWS, ["user.f0"], owner="alice", team="risk") for _ in range(2)]
        gone = await client.offline_query(ROWS, ["user.f0"], owner="bob", team="growth")
        await expire(client, first.id)
        await expire(client, gone.id)
        with pytest.raises(QuotaExceededError):  # the defect: alice has one job, and the quota says two
            await client.offline_query(ROWS, ["user.f0"], owner="alice", team="risk")
        assert await active(client) == {"owner:alice": 2, "team:risk": 2, "owner:bob": 1, "team:growth": 1}

        lowered = await QuotaRecount(client.redis, settings).run_once()
        assert sorted(lowered) == [("owner:alice", 2, 1), ("owner:bob", 1, 0), ("team:growth", 1, 0),
                                   ("team:risk", 2, 1)]
        assert await active(client) == {"owner:alice": 1, "team:risk": 1}
        assert await QuotaRecount(client.redis, settings).run_once() == []  # right counts are left alone
        await client.offline_query(ROWS, ["user.f0"], owner="alice", team="risk")  # her second slot is back
        await client.cancel(second.id)
        assert await active(client) == {"owner:alice": 1, "team:risk": 1}


async def test_a_sharded_querys_parent_is_not_counted(settings):
    """A sharded query's shards count in their owner's quota, its parent in none (its stored status stays `queued`
    while its state is derived from the shards): the recount counts the shards only, or a parent would hold a
    drifted count up for as long as the parent's record lives."""
    async with AsyncJobQueueClient(settings) as client:
        sharded = await client.offline_query(ROWS, ["user.f0"], owner="alice", num_shards=2)
        stale = await client.offline_query(ROWS, ["user.f0"], owner="alice")
        await expire(client, stale.id)
        assert await active(client) == {"owner:alice": 3}
        assert await QuotaRecount(client.redis, settings).run_once() == [("owner:alice", 3, 2)]
        assert await active(client) == {"owner:alice": 2}
        await client.cancel(sharded.id)
        assert await active(client) == {}


async def test_a_submit_and_a_cancel_between_the_scan_and_the_repair_are_counted_right(settings):
    """The scan has read the records; then alice submits one job and cancels another the scan saw unfinished, then
    the repair runs: it counts the new job (a submission indexed since shortly before the scan is checked again)
    and not the cancelled one (every candidate is checked again)."""
    async with AsyncJobQueueClient(settings) as client:
        stale, seen, kept = [await client.offline_query(ROWS, ["user.f0"], owner="alice") for _ in range(3)]
        await expire(client, stale.id)
        late: list[str] = []

        class Interleaved(QuotaRecount):
            async def _unfinished(self, fields: set[str]) -> dict[str, set[str]]:
                found = await super()._unfinished(fields)
                assert found["owner:alice"] == {seen.id, kept.id}
                late.append((await client.offline_query(ROWS, ["user.f0"], owner="alice")).id)
                await client.cancel(seen.id)
                return found

        assert await active(client) == {"owner:alice": 3}
        assert await Interleaved(client.redis, settings).run_once() == [("owner:alice", 3, 2)]
        assert await active(client) == {"owner:alice": 2}  # kept and late: the stale record's count is gone
        await client.cancel(kept.id)
        await client.cancel(late[0])
        assert await active(client) == {}


async def test_submits_and_ends_during_a_recount_are_neither_lost_nor_counted_twice(settings):
    """Many recounts race with submits and cancels of the same owner: each recount's scan and its script see some of
    them; at the end the count is exactly the unfinished jobs (a lost submit would leave it lower, a cancel counted
    twice lower still, an expired record unrepaired higher)."""
    async with AsyncJobQueueClient(settings) as client:
        stale = await client.offline_query(ROWS, ["user.f0"], owner="alice")
        await expire(client, stale.id)
        recount = QuotaRecount(client.redis, settings)
        kept: list[str] = []

        async def submits() -> None:
            for i in range(30):
                job = await client.offline_query(ROWS, ["user.f0"], owner="alice")
                if i % 3 == 0:
                    await client.cancel(job.id)
                else:
                    kept.append(job.id)

        async def recounts() -> None:
            while not done.is_set():
                await recount.run_once()
                await asyncio.sleep(0)

        done = asyncio.Event()
        racing = asyncio.create_task(recounts())
        await submits()
        done.set()
        await racing
        await recount.run_once()
        assert await active(client) == {"owner:alice": len(kept)} and len(kept) == 20


async def test_the_manager_recounts_every_interval(settings):
    settings = settings.model_copy(update={"quota_recount_seconds": 0.2})
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(ROWS, ["user.f0"], owner="alice")
        await expire(client, job.id)
        stop = asyncio.Event()
        loop = asyncio.create_task(QuotaRecount(client.redis, settings).run(stop))
        try:
            await eventually(lambda: _empty(client), timeout=30,
                             what="the recount to remove alice's count")
        finally:
            stop.set()
            await loop


async def _empty(client: AsyncJobQueueClient) -> bool:
    return await active(client) == {}
