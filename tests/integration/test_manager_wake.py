"""A submission wakes the manager for a tick at once; a burst of them costs one tick per wake gap, not one each."""

from __future__ import annotations

import asyncio
import time

from jobqueue import AsyncJobQueueClient, ResourceRequests
from jobqueue.groups import load_groups_config
from manager.backends.local import LocalBackend
from manager.reconcile import Reconciler
from tests.helpers import eventually, with_groups

GAP = 1.0


async def test_a_burst_of_submissions_wakes_the_manager_once_per_gap_and_the_last_one_is_seen(
        settings, tmp_path, arq_redis):
    # no periodic tick within the test: every tick after the first two is one a submission woke
    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}}, manager_tick_seconds=120.0,
                           manager_wake_gap_seconds=GAP)
    backend = LocalBackend(settings)
    reconciler = Reconciler(arq_redis, settings, load_groups_config(settings.resource_groups_path), backend)
    started: list[float] = []
    tick = reconciler.tick

    async def noted_tick():  # type: ignore[no-untyped-def]
        started.append(time.monotonic())
        return await tick()

    reconciler.tick = noted_tick  # type: ignore[method-assign]
    paused = ResourceRequests(resource_group="paused")
    stop = asyncio.Event()
    loop = asyncio.create_task(reconciler.run(stop))
    try:
        async with AsyncJobQueueClient(settings) as client:
            await eventually(lambda: len(started) >= 2, what="the first tick and the subscription's")
            await asyncio.sleep(GAP)  # idle for a whole gap: the next submission is the first in a while
            before, asked = len(started), time.monotonic()
            await client.offline_query({"user.id": [1]}, ["user.f0"], resources=paused)
            await eventually(lambda: len(started) > before, what="a tick woken by the submission")
            assert started[before] - asked < GAP / 2  # at once, not held

            burst_start, before = time.monotonic(), len(started)
            jobs = [await client.offline_query({"user.id": [i]}, ["user.f0"], resources=paused) for i in range(150)]
            burst_end = time.monotonic()
            during = [t for t in started[before:] if t <= burst_end]
            assert len(during) <= (burst_end - burst_start) / GAP + 1, (len(during), burst_end - burst_start)

            # the burst's last submission is not dropped: a tick after it sees every job queued
            async def all_seen() -> bool:
                status = reconciler.last.get("paused")
                ready = status.observed.stats.ready if status is not None else None
                return started[-1] > burst_end and ready == len(jobs) + 1

            await eventually(all_seen, timeout=GAP * 5, what="a tick after the burst that sees all its jobs")
    finally:
        stop.set()
        await asyncio.wait_for(loop, 30)
        await backend.aclose()
