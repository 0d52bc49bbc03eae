"""Chaos under load: 1,000 small jobs across 3 groups while busy consumers are SIGKILLed.

The local backend replaces killed consumers; the reaper re-queues their jobs. Only consumers that
hold a job are killed. Bounded: one run of 1,000 jobs, at most 20 kills, and a deadline on the
whole test.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import pytest

from jobqueue import AsyncJobQueueClient, ResourceRequests
from tests.helpers import eventually, running_manager, with_groups

GROUPS = ("alpha", "beta", "gamma")
JOBS = 1_000
MAX_KILLS = 20


async def nothing_left_behind(client: AsyncJobQueueClient, ids: list[str]) -> bool:
    """No queue entry, and no take's lock, outlives its job: an entry whose consumer was killed after the job's end
    (or before its claim) goes once its take's lease lapses (3 heartbeat TTLs)."""
    async with client.redis.pipeline(transaction=False) as pipe:
        for g in GROUPS:
            pipe.zcard(client.keys.queue(g))
        for job_id in ids:
            pipe.exists(client.keys.arq_in_progress(job_id))
        return not any(await pipe.execute())


@pytest.mark.timeout(600)
async def test_no_job_is_lost_while_consumers_are_killed(settings, tmp_path):
    settings = with_groups(
        settings, tmp_path, {g: {"max_instances": 3} for g in GROUPS},
        job_heartbeat_ttl_seconds=1.5, retry_backoff_seconds=0.1, scale_to_zero_cooldown_seconds=30.0,
    )
    rng = random.Random(7)
    kills = 0
    started = time.monotonic()
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        ids: list[str] = []

        async def statuses() -> list[str]:
            async with client.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hget(client.keys.job(job_id), "status")
                return [(s or b"").decode() for s in await pipe.execute()]

        async def busy_consumers() -> set[str]:
            owners: set[str] = set()
            for g in GROUPS:
                owners |= {v.decode() for v in (await client.redis.hgetall(client.keys.running(g))).values()}
            return owners

        async def killer() -> None:
            """Kill a consumer that holds a job, every 1.5 s, at most MAX_KILLS times. Killing one that has not
            taken a job yet would only measure how fast Python starts (and can livelock a slow machine)."""
            nonlocal kills
            while kills < MAX_KILLS:
                await asyncio.sleep(1.5)
                busy = await busy_consumers()
                victims = [c for g in GROUPS for c in backend.active(g) if c.consumer_id in busy]
                if victims:
                    os.kill(rng.choice(victims).pid, signal.SIGKILL)
                    kills += 1

        chaos = asyncio.create_task(killer())  # from the first submission on: jobs run while they arrive
        try:
            jobs = []
            for i in range(JOBS):
                group = GROUPS[i % len(GROUPS)]
                jobs.append(await client.offline_query({"user.id": [i % 50 + 1]}, ["user.f0"], max_retries=20,
                                                       resources=ResourceRequests(resource_group=group)))
            ids = [j.id for j in jobs]

            async def all_final():
                return all(s in {"succeeded", "failed", "cancelled", "expired"} for s in await statuses())

            await eventually(all_final, timeout=480, what="every job in a final state")
        finally:
            chaos.cancel()
        await eventually(lambda: nothing_left_behind(client, ids), timeout=60,
                         what="no queue entry or take lock left behind")
        final = await statuses()
        records = [await client.get_job(job_id) for job_id in ids]
    elapsed = time.monotonic() - started
    retried = [r for r in records if r.attempts > 1]
    print(f"\nchaos: {JOBS} jobs over {len(GROUPS)} groups in {elapsed:.1f} s, {kills} consumers killed, "
          f"{len(retried)} jobs ran again ({sum(r.attempts for r in records) - JOBS} extra attempts), "
          f"final: {dict((s, final.count(s)) for s in set(final))}")
    assert kills >= 3 and retried, "consumers were killed mid-flight, and their jobs ran again"
    assert final.count("succeeded") == JOBS, "0 jobs lost: all succeeded"
    root = settings.home / "results"
    results = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    expected = sorted(f"{settings.environment}/{job_id}/result.parquet" for job_id in ids)
    assert results == expected, "exactly one result per job, no leftovers"
    for r in retried:  # every extra attempt is explained by a lost consumer
        assert len(r.errors) == r.attempts - 1 and all("lost" in e for e in r.errors), r
