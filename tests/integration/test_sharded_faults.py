"""Sharded queries under faults and caps, with real consumer processes whose queries wait at a gate
(`tests.gated_consumer`): no timing is hoped for, every step waits for an observed state.

- `num_workers` is honoured across consumers: never more than W shards running, observed all along;
- cancelling the parent mid-run stops every shard, and no shard writes a result;
- killing the consumer of one shard runs that shard again, and only it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobqueue import AsyncJobQueueClient, JobStatus
from jobqueue.sample import sample_input
from jobqueue.settings import Settings
from jobqueue.store_scripts import HELD_SCORE_MS
from manager.reaper import Reaper
from tests.helpers import eventually
from tests.reference import assert_same, reference

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ["user.f0", "user.logins"]
HEARTBEAT_TTL = 1.5


@contextlib.asynccontextmanager
async def gated_consumers(settings: Settings, gate: Path, n: int) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.gated_consumer", "default", str(gate)], cwd=ROOT, env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(n)]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(30)


def _settings(settings: Settings, tmp_path: Path) -> tuple[Settings, Path]:
    gate = tmp_path / "gate"
    gate.mkdir()
    return settings.model_copy(update={"job_heartbeat_ttl_seconds": HEARTBEAT_TTL, "retry_backoff_seconds": 0.1,
                                       "query_threads": 1}), gate


async def _statuses(client: AsyncJobQueueClient, ids: list[str]) -> list[str]:
    async with client.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(client.keys.job(job_id), "status")
        return [(s or b"").decode() for s in await pipe.execute()]


async def _running(client: AsyncJobQueueClient) -> dict[str, str]:
    raw = await client.redis.hgetall(client.keys.running("default"))
    return {k.decode(): v.decode() for k, v in raw.items()}


@pytest.mark.timeout(300)
async def test_num_workers_caps_the_running_shards_across_consumers(settings, store, tmp_path):
    settings, gate = _settings(settings, tmp_path)
    ids, times = sample_input(store.users, 600, seed=4)
    async with AsyncJobQueueClient(settings) as client, gated_consumers(settings, gate, 4):
        job = await client.offline_query(ids, OUTPUT, times, num_shards=6, num_workers=2)
        shards = (await job.record()).shard_ids
        scores = [await client.redis.zscore(client.keys.queue("default"), client.keys.arq_id(s)) for s in shards]
        assert sum(1 for s in scores if s >= HELD_SCORE_MS) == 4, "shards past num_workers are held"
        most = 0
        stop = asyncio.Event()

        async def observe() -> None:  # every 20 ms, how many shards of the query run at once
            nonlocal most
            while not stop.is_set():
                most = max(most, sum(1 for s in await _statuses(client, shards) if s == "running"))
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(observe())
        try:
            await eventually(lambda: _count(client, shards, "running", 2), timeout=120, what="two shards running")
            for _ in range(2):  # one finishes at a time: each end releases one held sibling
                running = [s for s, st in zip(shards, await _statuses(client, shards), strict=True) if st == "running"]
                (gate / running[0]).touch()
                await eventually(lambda r=running[0]: _is(client, r, "succeeded"), timeout=60, what="a shard done")
                await eventually(lambda: _count(client, shards, "running", 2), timeout=60, what="the next one")
            (gate / "all").touch()
            assert (await job.wait(timeout=120, show_progress=False)).status is JobStatus.SUCCEEDED
        finally:
            stop.set()
            await watcher
        assert most == 2, f"at most num_workers=2 shards ran at once across 4 consumers (saw {most})"
        assert_same(await job.to_pandas(), reference(store, ids["user.id"], times, OUTPUT))


@pytest.mark.timeout(300)
async def test_cancelling_the_parent_stops_every_shard_and_writes_nothing(settings, store, tmp_path):
    settings, gate = _settings(settings, tmp_path)
    ids, times = sample_input(store.users, 500, seed=6)
    async with AsyncJobQueueClient(settings) as client, gated_consumers(settings, gate, 3):
        job = await client.offline_query(ids, OUTPUT, times, num_shards=5)
        shards = (await job.record()).shard_ids
        await eventually(lambda: _count(client, shards, "running", 3), timeout=120, what="three shards running")
        record = await job.cancel(wait=60)
        assert record.status is JobStatus.CANCELLED
        assert await _statuses(client, shards) == ["cancelled"] * 5
        assert not await _running(client)
        (gate / "all").touch()  # were any shard still going, it would now write its result
        assert await client.redis.zcard(client.keys.queue("default")) == 0
        results = settings.home / "results" / settings.environment
        assert not [p for p in results.rglob("*") if p.is_file()] if results.exists() else True
        assert (await client.get_job(job.id)).status is JobStatus.CANCELLED


@pytest.mark.timeout(300)
async def test_killing_the_consumer_of_one_shard_runs_that_shard_again_only(settings, store, tmp_path):
    settings, gate = _settings(settings, tmp_path)
    ids, times = sample_input(store.users, 450, seed=8)
    async with AsyncJobQueueClient(settings) as client, gated_consumers(settings, gate, 3) as procs:
        job = await client.offline_query(ids, OUTPUT, times, num_shards=3)
        shards = (await job.record()).shard_ids
        await eventually(lambda: _count(client, shards, "running", 3), timeout=120, what="three shards running")
        victim = (await _running(client))[shards[1]]
        info = json.loads(await client.redis.hget(client.keys.consumers("default"), victim))
        by_pid = {p.pid: p for p in procs}
        os.kill(info["pid"], signal.SIGKILL)
        by_pid[info["pid"]].wait(30)
        reaper = Reaper(client.redis, client.keys, client.store, HEARTBEAT_TTL, client.storage)

        async def reaped() -> bool:
            await reaper.run({"default": await _running(client)})
            return (await _statuses(client, [shards[1]]))[0] == "queued"

        await eventually(reaped, timeout=60, what="the lost shard queued again")
        (gate / "all").touch()
        assert (await job.wait(timeout=120, show_progress=False)).status is JobStatus.SUCCEEDED
        records = [await client.get_job(s) for s in shards]
        assert [r.attempts for r in records] == [1, 2, 1], "only the killed consumer's shard ran again"
        assert "lost" in records[1].errors[0]
        assert_same(await job.to_pandas(), reference(store, ids["user.id"], times, OUTPUT))


async def _count(client: AsyncJobQueueClient, ids: list[str], status: str, n: int) -> bool:
    return sum(1 for s in await _statuses(client, ids) if s == status) == n


async def _is(client: AsyncJobQueueClient, job_id: str, status: str) -> bool:
    return (await _statuses(client, [job_id]))[0] == status


@pytest.mark.timeout(300)
async def test_a_shard_lost_beyond_its_retries_fails_the_query_and_cancels_its_held_siblings(settings, store, tmp_path):
    from jobqueue.keys import ActiveJobsField

    settings, gate = _settings(settings, tmp_path)
    ids, times = sample_input(store.users, 300, seed=9)
    async with AsyncJobQueueClient(settings) as client, gated_consumers(settings, gate, 1) as procs:
        job = await client.offline_query(ids, OUTPUT, times, num_shards=3, num_workers=1, max_retries=0,
                                         owner="bea")
        shards = (await job.record()).shard_ids
        await eventually(lambda: _is(client, shards[0], "running"), timeout=120, what="the first shard running")
        procs[0].kill()
        procs[0].wait(30)
        reaper = Reaper(client.redis, client.keys, client.store, HEARTBEAT_TTL, client.storage)

        async def reaped() -> bool:
            await reaper.run({"default": await _running(client)})
            return (await _statuses(client, [shards[0]]))[0] == "failed"

        await eventually(reaped, timeout=60, what="the lost shard failed (no retries left)")
        assert await _statuses(client, shards) == ["failed", "cancelled", "cancelled"]
        assert (await job.record()).status is JobStatus.FAILED
        assert await client.redis.hget(client.keys.active_jobs, ActiveJobsField.OWNER.field("bea")) is None
