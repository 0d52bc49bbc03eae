"""The scaling of a sharded query: the manager's decide() counts ready jobs, and held shards (past num_workers)
are never due, so N shards scale their group to min(N, W, max_instances). On the Kubernetes emulator (ticks by
hand, the Deployment's replicas observed) and on the local backend (the real manager loop and consumer processes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import numpy as np
import pyarrow as pa
import pytest

from jobqueue import AsyncJobQueueClient, JobStatus, ResourceRequests
from manager.reconcile import Reconciler
from tests.helpers import mark_busy, running_manager, with_groups
from tests.integration.test_kubernetes_backend import NS
from tests.kube_emulator import ClusterEmulator
from tests.kube_support import emulated_reconciler, replicas

ETL = ResourceRequests(resource_group="etl")
IDS = {"user.id": pa.array(np.arange(1, 601), type=pa.int64())}


@pytest.fixture
async def kube(settings, tmp_path) -> AsyncIterator[tuple[ClusterEmulator, Reconciler, AsyncJobQueueClient]]:
    settings = with_groups(settings, tmp_path, {"etl": {"max_instances": 4}}, scaler_backend="kubernetes",
                           kubernetes_namespace=NS, kubernetes_consumer_image="jobqueue:test",
                           scale_down_stabilization_seconds=0.0, scale_to_zero_cooldown_seconds=0.0)
    async with emulated_reconciler(settings) as (emulator, reconciler, client):
        yield emulator, reconciler, client


@pytest.mark.parametrize("shards, workers, expected", [(6, 2, 2), (6, None, 4), (3, None, 3), (3, 8, 3)])
async def test_on_kubernetes_n_shards_scale_the_group_to_min_n_w_max(kube, shards, workers, expected):
    emulator, reconciler, client = kube
    await client.offline_query(IDS, ["user.f0"], num_shards=shards, num_workers=workers, resources=ETL)
    await reconciler.tick()
    assert replicas(emulator) == expected


async def test_on_kubernetes_a_finished_shard_releases_the_next_and_the_group_stays_at_w(kube):
    emulator, reconciler, client = kube
    store = client.store
    job = await client.offline_query(IDS, ["user.f0"], num_shards=6, num_workers=2, resources=ETL)
    shards = (await job.record()).shard_ids
    for done in shards[:3]:  # a consumer takes the first due shard, finishes it: the next held one is released
        assert (await store.claim(done, "pod-a", "etl", 30)).claimed
        await mark_busy(client.redis, client.keys, "etl", "pod-a", done)  # its consumer's presence
        await reconciler.tick()
        assert replicas(emulator) == 2, "one running + one due"
        assert await store.transition(done, [JobStatus.RUNNING], JobStatus.SUCCEEDED, release="etl") == 1
        await store.dequeue(done, "etl")  # arq takes a finished job off its queue
        assert await store.release_shard(done, job.id, "etl") is not None
        await reconciler.tick()
        assert replicas(emulator) == 2


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers, expected", [(2, 2), (None, 4)])
async def test_on_the_local_backend_the_manager_asks_for_min_n_w_max_consumers(settings, tmp_path, workers,
                                                                               expected):
    settings = with_groups(settings, tmp_path, {"etl": {"max_instances": 4}}, scale_down_stabilization_seconds=30.0)
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(IDS, ["user.f0"], num_shards=6, num_workers=workers, resources=ETL)
        most_desired = most_started = 0

        async def watch() -> None:
            nonlocal most_desired, most_started
            while True:
                raw = await client.redis.hget(client.keys.group_states, "etl")
                if raw:
                    most_desired = max(most_desired, int(json.loads(raw)["desired"]))
                most_started = max(most_started, len(backend.active("etl")))
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        try:
            assert (await job.wait(timeout=240, show_progress=False)).status is JobStatus.SUCCEEDED
        finally:
            watcher.cancel()
        assert most_desired == expected and 1 <= most_started <= expected
