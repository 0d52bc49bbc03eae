"""Fair share across owners, priorities and team limits on a real Redis, with real consumers (in this process,
running a stand-in query of known length: `bench.fair_share.SleepQuery`) and the SDK's own submit path."""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from arq.constants import in_progress_key_prefix
from arq.worker import Retry

from bench.consumer_overhead import REGISTRY
from bench.fair_share import SleepQuery, all_done, consumers, run_case, submit
from consumer.job import JobRun
from jobqueue import serializer
from jobqueue.client import AsyncJobQueueClient
from jobqueue.errors import InvalidQueryError
from jobqueue.fair_share import FairShare, fair_score, limits_json, virtual_time
from jobqueue.jobstore import JobStore
from jobqueue.keys import MANAGER_TICK_AT, JobField, Keys
from jobqueue.models import JobRecord, JobStatus, PerformanceSummary, Priority, QueryJob, WaitCode
from jobqueue.quotas import TeamQuota
from jobqueue.settings import Settings
from jobqueue.wait_observe import team_running

# The bound: B's jobs and A's backlog alternate, B first (equal weights: B's k-th job scores just ahead of A's k-th
# waiting one), so between B's submission and the start of B's last job at most one of A's jobs starts per B job
# (4 when B's submissions come quicker than jobs end; one more per gap between two of B's submissions that a job
# ends in), plus one per consumer (a take in flight as B submits, claimed after): 5 + 2 = 7 here; and A's backlog
# has not drained by then (under FIFO all of it starts first: 7 is passed at once).
A_JOBS, B_JOBS, CONSUMERS = 200, 5, 2
A_JOBS_BEFORE_B_BOUND = B_JOBS + CONSUMERS


async def test_a_new_owner_starts_before_another_owners_backlog_drains(settings: Settings) -> None:
    fair = await run_case(settings, A_JOBS, B_JOBS, CONSUMERS, job_seconds=0.1)
    assert fair.a_jobs_during_b <= A_JOBS_BEFORE_B_BOUND, fair
    assert fair.a_jobs_after_b > 0, fair  # A's backlog had not drained when B's last job started
    # under FIFO the same submissions run B's jobs after all of A's
    fifo = await run_case(settings.model_copy(update={"fair_share": False,
                                                      "environment": settings.environment + "-fifo"}),
                          40, B_JOBS, CONSUMERS, job_seconds=0.02)
    assert fifo.a_jobs_after_b == 0 and fifo.a_jobs_during_b > A_JOBS_BEFORE_B_BOUND, fifo


async def queue_order(client: AsyncJobQueueClient, group: str = "default") -> list[str]:
    members = await client.redis.zrange(client.keys.queue(group), 0, -1)
    return [client.keys.job_id_of(m.decode()) or "" for m in members]


async def test_priority_weights_the_share_and_never_jumps_the_whole_queue(settings: Settings) -> None:
    async with AsyncJobQueueClient(settings, registry=REGISTRY) as client:
        a = await submit(client, "ann", 30)
        high = await submit(client, "bob", 10, priority=Priority.HIGH)
        low = await submit(client, "cat", 10, priority=Priority.LOW)
        order = await queue_order(client)
    rank = {job: i for i, job in enumerate(order)}
    assert order[:3] == [low[0], high[0], a[0]]  # an owner with nothing waiting goes next, whatever its priority
    # high (4) against normal (2): two of bob's jobs for each of ann's; they do not all go first
    assert rank[a[1]] < rank[high[3]]
    assert max(rank[j] for j in high) < rank[a[5]]
    # low (1) against normal (2): one of cat's jobs for two of ann's
    assert rank[a[9]] < rank[low[9]] < rank[a[21]]
    assert rank[low[0]] < rank[a[3]]  # and cat's first job is not behind ann's backlog


async def test_priority_goes_through_the_sdk_and_is_stored(settings: Settings) -> None:
    async with AsyncJobQueueClient(settings, registry=REGISTRY) as client:
        [job] = await submit(client, "ann", 1, priority=Priority.LOW)
        record = await client.store.get(job)
        assert record is not None and record.priority is Priority.LOW
        with pytest.raises(InvalidQueryError, match="priority"):
            await client.offline_query({"user.id": [1]}, ["user.f"], priority="urgent")


async def test_the_submit_script_agrees_with_the_pure_rules(settings: Settings) -> None:
    """Random queues (hostile scores, foreign members, running jobs) and finish times: the score the script gives a
    new job, and the finish time it records, are `virtual_time` and `fair_score`'s."""
    keys = Keys.for_environment(settings.environment)
    rnd = random.Random(17)
    async with AsyncJobQueueClient(settings, registry=REGISTRY) as client:
        store, redis = JobStore(client.redis, keys, 3600), client.redis
        queue, finish, running = keys.queue("default"), keys.fair_finish("default"), keys.running("default")
        for case in range(40):
            await redis.delete(queue, finish, running)
            now = float(int(time.time() * 1000))
            entries: dict[str, float] = {}
            for i in range(rnd.randint(0, 6)):
                member = rnd.choice([keys.arq_id(f"q{case}-{i}"), f"jobqueue:other:{i}", keys.arq_id(f"r{case}-{i}")])
                entries[member] = rnd.choice([now - rnd.uniform(0, 5000), float("-inf"), -5.0, now + 1000,
                                              now - 2 * 86_400_000, 0.0])
            if entries:
                await redis.zadd(queue, entries)
            for member in entries:
                if member.startswith(keys.arq_id("r")):
                    await redis.hset(running, keys.job_id_of(member) or "", "c")
            known = rnd.choice([None, str(now - 100), str(now + 50), "inf", "-inf", "nan", "junk", str(now + 1e9)])
            if known is not None:
                await redis.hset(finish, "ann", known)
            step = rnd.choice([0.25, 0.5, 1.0, 1 / 12])
            listed = [(m.decode(), s) for m, s in await redis.zrange(queue, 0, -1, withscores=True)]
            job_id = f"new{case}"
            record = JobRecord(job_id=job_id, status=JobStatus.QUEUED, resource_group="default", output=["user.f"],
                               input_rows=1, submitted_at=datetime.fromtimestamp(now / 1000, UTC), owner="ann")
            await store.submit(record, queue, b"{}", 60_000, fair=FairShare("ann", step))
            try:
                parsed = float(known) if known is not None else None
            except ValueError:
                parsed = None
            v = virtual_time(listed, [keys.job_id_of(m) or "" for m in entries if m.startswith(keys.arq_id("r"))],
                             keys.prefix, now)
            want_score, want_finish = fair_score(v, parsed, step, now)
            got = await redis.zscore(queue, keys.arq_id(job_id))
            assert got == pytest.approx(want_score, abs=1e-6), (case, entries, known)
            assert float(await redis.hget(finish, "ann")) == pytest.approx(want_finish, abs=1e-6), (case, known)
            for member, score in entries.items():  # nothing else was re-scored
                assert await redis.zscore(queue, member) == score
            await redis.delete(keys.job(job_id), keys.arq_job(job_id))


async def test_a_hostile_minus_inf_entry_does_not_rescore_new_jobs(settings: Settings) -> None:
    async with AsyncJobQueueClient(settings, registry=REGISTRY) as client:
        queue = client.keys.queue("default")
        await client.redis.zadd(queue, {client.keys.arq_id("planted"): float("-inf"), "jobqueue:x:y": 0})
        before = time.time() * 1000
        [job] = await submit(client, "ann", 1)
        score = await client.redis.zscore(queue, client.keys.arq_id(job))
        assert before - 1000 <= score <= time.time() * 1000
        assert await client.redis.zscore(queue, client.keys.arq_id("planted")) == float("-inf")


async def test_a_team_never_runs_more_than_its_limit_and_says_why_its_jobs_wait(
        settings: Settings, tmp_path: Path) -> None:
    limited = settings.model_copy(update={"quota_max_running_per_team": 2})
    keys = Keys.for_environment(settings.environment)
    async with AsyncJobQueueClient(limited, registry=REGISTRY) as client, consumers(limited, 4):
        # a manager's tick and group, as one publishes them, so that the wait reason gets past "no manager"
        await client.redis.hset(keys.manager_state, MANAGER_TICK_AT, str(time.time() + 3600))
        await client.redis.hset(keys.groups, "default", json.dumps({"max_instances": 4}))
        SleepQuery.seconds = 0.4
        risk = await submit(client, "rita", 6, team="risk")
        ml = await submit(client, "mo", 2, team="ml")
        most, reasons = 0, []
        while True:
            n = await team_running(client.redis, keys, "default", "risk")
            assert n <= 2, "team risk ran more than its limit"
            most = max(most, n)
            records = [await client.get_job(j) for j in risk]
            reasons += [r.wait_reason for r in records if r.wait_reason is not None and n == 2]
            if all(r.status.is_final for r in records):
                break
            await asyncio.sleep(0.02)
        ml_records = await all_done(client, ml, timeout=60)
        risk_records = await all_done(client, risk, timeout=60)
    assert most == 2
    assert all(r.status is JobStatus.SUCCEEDED for r in [*risk_records, *ml_records]), [*risk_records, *ml_records]
    last_risk_start = max(r.started_at for r in risk_records if r.started_at)
    assert all(r.started_at and r.started_at < last_risk_start for r in ml_records), (ml_records, last_risk_start)
    team_waits = [r for r in reasons if r.code is WaitCode.TEAM_LIMIT]
    assert team_waits, reasons
    assert team_waits[0].message.startswith("waiting: team risk at its limit of 2 running")


async def test_the_claim_counts_the_team_atomically(settings: Settings) -> None:
    """Two consumers that both passed the take: the claim lets one run and tells the other how many run."""
    limited = settings.model_copy(update={"quota_team_overrides": {"risk": TeamQuota(max_running=1)}})
    limits = limits_json(limited)
    async with AsyncJobQueueClient(limited, registry=REGISTRY) as client:
        first, second = await submit(client, "rita", 2, team="risk")
        [other] = await submit(client, "mo", 1, team="ml")
        store = client.store
        assert (await store.claim(first, "c1", "default", 30, limits)).claimed
        refused = await store.claim(second, "c2", "default", 30, limits)
        assert not refused.claimed and refused.team_running == 1
        assert (await client.store.get(second)).status is JobStatus.QUEUED  # type: ignore[union-attr]
        assert (await store.claim(other, "c2", "default", 30, limits)).claimed  # another team is not held
        await store.mark_succeeded(first, "x", _summary(), owner="c1", release="default")
        assert (await store.claim(second, "c2", "default", 30, limits)).claimed
        assert await client.redis.hget(client.keys.job(second), JobField.STATUS) == b"running"


def _summary() -> PerformanceSummary:
    return PerformanceSummary(consumer_id="c1", spill_enabled=True, spilled_bytes=0, memory_limit_bytes=1,
                              peak_memory_bytes=0, threads=1, rows_in=1, rows_out=1, queue_wait_seconds=0.0,
                              execution_seconds=0.0, total_seconds=0.0)


async def test_a_consumer_that_loses_the_claim_race_hands_the_job_back_in_its_place(settings: Settings) -> None:
    """The take saw room, another consumer's claim took the team's last slot since: the claim refuses, and the job
    goes back to arq with no new score (`Retry(defer=0)`), still queued, in its fair-share place."""
    limited = settings.model_copy(update={"quota_max_running_per_team": 1})
    async with AsyncJobQueueClient(limited, registry=REGISTRY) as client, consumers(limited, 1) as [worker]:
        first, second = await submit(client, "rita", 2, team="risk")
        queue, member = client.keys.queue("default"), client.keys.arq_id(second)
        # the other consumer's claim (if the worker has not taken the first job itself already: either way it runs)
        await client.store.claim(first, "other", "default", 60, limits_json(limited))
        score = await client.redis.zscore(queue, member)
        envelope = serializer.loads(await client.redis.get(client.keys.arq_job(second)))
        job = QueryJob.model_validate(envelope["k"]["job"])
        with pytest.raises(Retry) as handed_back:
            await JobRun(worker.ctx["consumer"], job)()
        assert not handed_back.value.defer_score  # arq re-scores a retry only by a delay: none
        record = await client.store.get(second)
        assert record is not None and record.status is JobStatus.QUEUED and record.attempts == 0
        assert await client.redis.zscore(queue, member) == score


async def test_a_job_that_can_run_behind_more_than_a_page_of_held_ones_is_taken(settings: Settings) -> None:
    """150 due jobs of a team at its limit ahead of one that can run (arq reads the first 100 due entries): the
    consumer's look at the queue goes past them, and takes none of them."""
    limited = settings.model_copy(update={"quota_max_running_per_team": 1, "fair_share": False})  # FIFO order
    keys = Keys.for_environment(settings.environment)
    async with AsyncJobQueueClient(limited, registry=REGISTRY) as client:
        first, *held = await submit(client, "rita", 151, team="risk")
        # another consumer runs the first (claimed, arq's in-progress key set): team risk is at its limit of 1
        assert (await client.store.claim(first, "other", "default", 60, limits_json(limited))).claimed
        await client.redis.set(in_progress_key_prefix + keys.arq_id(first), "1", px=120_000)
        [runnable] = await submit(client, "mo", 1, team="ml")
        SleepQuery.seconds = 0.01
        async with consumers(limited, 1):
            [done] = await all_done(client, [runnable], timeout=30)
            records = [await client.store.get(j) for j in held]
        assert done.status is JobStatus.SUCCEEDED, done
        assert all(r is not None and r.status is JobStatus.QUEUED for r in records)
        assert await team_running(client.redis, keys, "default", "risk") == 1
