"""Quotas (issue 15): an owner's and a team's unfinished jobs, and one job's input rows. Over a quota the submission
raises `QuotaExceededError` naming the quota, its limit and the count, and nothing is staged; the counts follow every
final transition back to 0; concurrent submits never pass the last slot together."""

from __future__ import annotations

import asyncio

import pytest

from jobqueue import AsyncJobQueueClient, JobStatus, QuotaExceededError
from jobqueue.quotas import TeamQuota
from tests.helpers import worker_running

ROWS = {"user.id": [1, 2]}


def staged(client: AsyncJobQueueClient) -> set[str]:
    """The ids of the jobs that have anything under the staging root."""
    return set(client.storage.job_ids(client.settings.staging))


async def active(client: AsyncJobQueueClient) -> dict[str, int]:
    raw = await client.redis.hgetall(client.keys.active_jobs)
    return {k.decode(): int(v) for k, v in raw.items()}


async def test_an_owner_over_its_queued_quota_is_refused_naming_it_and_nothing_is_staged(settings):
    settings = settings.model_copy(update={"quota_max_queued_per_owner": 2})
    async with AsyncJobQueueClient(settings) as client:
        accepted = [await client.offline_query(ROWS, ["user.f0"], owner="alice") for _ in range(2)]
        assert staged(client) == {j.id for j in accepted}
        with pytest.raises(QuotaExceededError) as info:
            await client.offline_query(ROWS, ["user.f0"], owner="alice")
        e = info.value
        assert (e.quota, e.subject, e.limit, e.current) == ("max_queued_per_owner", "alice", 2, 2)
        message = str(e)
        for text in ("max_queued_per_owner", "owner alice has 2 unfinished", "the limit is 2",
                     "JOBQUEUE_QUOTA_MAX_QUEUED_PER_OWNER", "cancel", "nothing was submitted"):
            assert text in message, message
        assert staged(client) == {j.id for j in accepted}  # the refused job staged nothing
        assert len(await client.store.recent()) == 2
        await client.offline_query(ROWS, ["user.f0"], owner="bob")  # another owner is not held back
        assert await active(client) == {"owner:alice": 2, "owner:bob": 1}


async def test_a_team_over_its_queued_quota_is_refused_and_an_override_replaces_the_default(settings):
    settings = settings.model_copy(update={"quota_max_queued_per_team": 1,
                                           "quota_team_overrides": {"growth": TeamQuota(max_queued=2)}})
    async with AsyncJobQueueClient(settings) as client:
        await client.offline_query(ROWS, ["user.f0"], owner="alice", team="risk")
        with pytest.raises(QuotaExceededError, match=r"quota max_queued_per_team exceeded: team risk has 1 unfinished "
                           r"\(queued or running\) jobs, the limit is 1 \(JOBQUEUE_QUOTA_MAX_QUEUED_PER_TEAM\)"):
            await client.offline_query(ROWS, ["user.f0"], owner="bob", team="risk")  # the team's, not bob's
        await client.offline_query(ROWS, ["user.f0"], owner="bob", team="growth")
        await client.offline_query(ROWS, ["user.f0"], owner="bob", team="growth")
        with pytest.raises(QuotaExceededError, match=r'the limit is 2 \(JOBQUEUE_QUOTA_TEAM_OVERRIDES\["growth"\]'
                                                     r"\.max_queued\)") as info:
            await client.offline_query(ROWS, ["user.f0"], owner="carol", team="growth")
        assert (info.value.quota, info.value.subject, info.value.current) == ("max_queued_per_team", "growth", 2)
        assert len(staged(client)) == 3


async def test_an_input_over_the_rows_quota_is_refused_before_staging(settings):
    settings = settings.model_copy(update={"quota_max_input_rows": 2,
                                           "quota_team_overrides": {"risk": TeamQuota(max_input_rows=0)}})
    async with AsyncJobQueueClient(settings) as client:
        await client.offline_query(ROWS, ["user.f0"])
        with pytest.raises(QuotaExceededError) as info:
            await client.offline_query({"user.id": [1, 2, 3]}, ["user.f0"], team="growth")
        assert (info.value.quota, info.value.subject, info.value.limit, info.value.current) == (
            "max_input_rows", "growth", 2, 3)
        assert "the input has 3 rows, the limit is 2 (JOBQUEUE_QUOTA_MAX_INPUT_ROWS); split the input" in str(
            info.value)
        assert len(staged(client)) == 1
        await client.offline_query({"user.id": [1, 2, 3]}, ["user.f0"], team="risk")  # no limit for risk


async def test_the_counts_go_back_to_zero_whatever_way_the_jobs_end(settings):
    settings = settings.model_copy(update={"quota_max_queued_per_owner": 5, "quota_max_queued_per_team": 5})
    who = {"owner": "alice", "team": "risk"}
    async with AsyncJobQueueClient(settings) as client:
        jobs = [await client.offline_query(ROWS, ["user.f0"], **who) for _ in range(5)]
        assert await active(client) == {"owner:alice": 5, "team:risk": 5}
        store = client.store
        cancelled, failed, expired, requeued, succeeded = (j.id for j in jobs)
        assert (await client.cancel(cancelled)).status is JobStatus.CANCELLED  # queued -> cancelled
        assert (await store.claim(failed, "c1", "default", 30)).claimed
        assert await store.mark_failed(failed, "boom", owner="c1", release="default")  # running -> failed
        assert await store.mark_expired(expired, "past its deadline")  # queued -> expired
        assert (await store.claim(requeued, "c1", "default", 30)).claimed
        assert await store.requeue(requeued, ["lost"], owner="c1", release="default")  # running -> queued
        assert await active(client) == {"owner:alice": 2, "team:risk": 2}
        assert not await store.mark_cancelled(failed)  # a job that is over again: counted once
        assert await active(client) == {"owner:alice": 2, "team:risk": 2}
        for j in (expired, failed, cancelled):  # their queue entries go, as the manager and consumers do it
            await store.dequeue(j, "default")
        async with worker_running(settings):
            for j in (requeued, succeeded):
                assert (await client.job(j).wait(timeout=30, show_progress=False)).status is JobStatus.SUCCEEDED
        assert await active(client) == {}
        await client.offline_query(ROWS, ["user.f0"], **who)  # the slots are free again
        assert await active(client) == {"owner:alice": 1, "team:risk": 1}


async def test_concurrent_submits_never_pass_the_last_slot_together(settings):
    settings = settings.model_copy(update={"quota_max_queued_per_owner": 5})
    async with AsyncJobQueueClient(settings) as client:
        outcomes = await asyncio.gather(*(client.offline_query(ROWS, ["user.f0"], owner="alice") for _ in range(20)),
                                        return_exceptions=True)
        accepted = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, QuotaExceededError)]
        assert (len(accepted), len(refused)) == (5, 15), outcomes
        assert {r.current for r in refused} == {5}
        assert await active(client) == {"owner:alice": 5}
        assert staged(client) == {j.id for j in accepted}  # the refused ones' staged inputs were removed
        assert len(await client.store.recent()) == 5
