"""Listings show a user's queries: a sharded query once, as its parent job, beside the unsharded jobs; its shards only
when asked (`parent=<id>`: that query's, `include_shards`: every job's). The SDK (direct and over HTTP), `GET
/v1/jobs`, the console's jobs page and `jobqueue jobs`, on the shared Redis and the real API server. A listing by
state finds the parent by its state as derived from its shards, as the shards start and end under a real consumer."""

from __future__ import annotations

import asyncio
import re

import httpx

from jobqueue import AsyncJobQueueClient, JobStatus
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.handles import AsyncJobHandle
from jobqueue.keys import ListingIndex
from tests.api_support import bearer, make_token
from tests.console_support import sign_in
from tests.helpers import worker_running
from tests.integration.test_cli_jobs import cli

ROWS = re.compile(r'<tr data-job="([^"]+)"')


async def listed(client: AsyncJobQueueClient, **filters: object) -> list[str]:
    return [r.job_id for r in await client.jobs(**filters)]  # type: ignore[arg-type]


async def test_a_sharded_query_is_listed_once_and_its_shards_when_asked(settings, redis_url, environment, tmp_path):
    async with AsyncJobQueueClient(settings) as client:  # no consumer: all stay queued
        parent = await client.offline_query({"user.id": list(range(1, 61))}, ["user.f0"], owner="alice", team="risk",
                                            num_shards=3, num_workers=2)
        plain = await client.offline_query({"user.id": [1]}, ["user.f0"], owner="alice", team="risk")
        shards = (await client.get_job(parent.id)).shard_ids
        assert len(shards) == 3
        queries, everything = [plain.id, parent.id], {plain.id, parent.id, *shards}
        assert await listed(client) == queries
        assert await listed(client, owner="alice", state="queued") == queries  # through other indexes too
        assert set(await listed(client, parent=parent.id)) == set(shards)
        assert set(await listed(client, include_shards=True)) == everything
        assert await listed(client, parent=plain.id) == []

    token = await make_token(settings, "alice", Role.USER, "risk")
    with api_in_thread(settings, port=0) as url:
        async with AsyncJobQueueClient(settings, api_url=url, token=token) as remote:  # the SDK over HTTP
            assert await listed(remote) == queries
            assert set(await listed(remote, parent=parent.id)) == set(shards)
            assert set(await listed(remote, include_shards=True)) == everything
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            async def api(**params: str) -> list[str]:
                reply = await http.get("/v1/jobs", params=params, headers=bearer(token))
                assert reply.status_code == 200, reply.text
                return [j["job_id"] for j in reply.json()["jobs"]]

            assert await api() == queries
            assert set(await api(parent=parent.id)) == set(shards)
            assert set(await api(include_shards="true")) == everything
            assert (await http.get("/v1/jobs", params={"parent": "no such id"}, headers=bearer(token))
                    ).status_code == 422
            await sign_in(http, token)
            assert ROWS.findall((await http.get("/jobs")).text) == queries
            assert set(ROWS.findall((await http.get("/jobs", params={"parent": parent.id})).text)) == set(shards)
            page = (await http.get("/jobs", params={"include_shards": "1"})).text
            assert set(ROWS.findall(page)) == everything and 'name="include_shards" type="checkbox" value="1" checked' \
                in page

    code, out = await asyncio.to_thread(cli, redis_url, environment, tmp_path, "jobs")
    assert code == 0 and parent.id in out and plain.id in out and not any(s in out for s in shards), out
    code, out = await asyncio.to_thread(cli, redis_url, environment, tmp_path, "jobs", "--parent", parent.id)
    assert code == 0 and all(s in out for s in shards) and plain.id not in out, out
    code, out = await asyncio.to_thread(cli, redis_url, environment, tmp_path, "jobs", "--shards")
    assert code == 0 and all(j in out for j in everything), out


async def test_a_listing_by_state_finds_the_parent_by_its_derived_state(settings, store):
    """The parent's stored record stays `queued`: it is listed by the state its shards give it, as they run."""
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": list(range(1, 31))}, ["user.f0"], num_shards=3, num_workers=1)
        assert await listed(client, state="queued") == [job.id]
        async with worker_running(settings):
            record = await AsyncJobHandle(job.id, client).wait(timeout=120, show_progress=False)
        assert record.status is JobStatus.SUCCEEDED
        assert await listed(client, state="succeeded") == [job.id]
        assert await listed(client, state="queued") == [] and await listed(client, state="running") == []
        # and sorted by wait or duration (the API's `sort`), as its shards ran
        assert await client.redis.zscore(client.keys.jobs_by_wait, job.id) is not None
        assert await client.redis.zscore(client.keys.jobs_by_duration, job.id) is not None


async def test_the_listing_upkeep_puts_a_parent_in_the_index_of_its_derived_state(settings):
    """A shard's start whose relisting of its parent was cut off (here: a claim alone): the garbage collector's
    backfill lists the parent by its derived state, and a second run changes nothing."""
    from manager.gc import GarbageCollector

    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": list(range(1, 31))}, ["user.f0"], num_shards=2)
        first = (await client.get_job(job.id)).shard_ids[0]
        assert (await client.store.claim(first, "c1", "default", 60)).claimed
        assert (await client.get_job(job.id)).status is JobStatus.RUNNING
        assert await listed(client, state="running") == []  # not relisted
        gc = GarbageCollector(client.redis, settings)
        assert job.id in (await gc.run_once()).removed["listing_backfill"]
        assert await listed(client, state="running") == [job.id] and await listed(client, state="queued") == []
        assert (await gc.run_once()).removed["listing_backfill"] == []


async def unlist_shards(client: AsyncJobQueueClient, parent: str) -> list[str]:
    """Take a sharded query's shards out of the per-parent index and the index of every shard, as a version before
    those indexes left them; its shards, in shard order."""
    keys = client.keys
    shards = (await client.get_job(parent)).shard_ids
    by_parent = keys.jobs_by(ListingIndex.PARENT, parent)
    await client.redis.zrem(by_parent, *shards)
    await client.redis.zrem(keys.shard_jobs, *shards)
    await client.redis.srem(keys.listing_indexes, by_parent, keys.shard_jobs)
    return shards


async def test_the_listing_upkeep_indexes_the_shards_of_a_query_from_before_the_shard_indexes(settings):
    """Shards submitted before the per-parent and every-shard indexes: `jobs(parent=<id>)` does not find them (the
    default listing hides them by their record). One run of the garbage collector's upkeep indexes them, from their
    parent's `shard_ids`; a second changes nothing."""
    from manager.gc import GarbageCollector

    async with AsyncJobQueueClient(settings) as client:  # no consumer: all stay queued
        job = await client.offline_query({"user.id": list(range(1, 41))}, ["user.f0"], num_shards=4, num_workers=2)
        shards = await unlist_shards(client, job.id)
        assert await listed(client, parent=job.id) == [] and await listed(client) == [job.id]
        gc = GarbageCollector(client.redis, settings)
        assert set(shards) <= set((await gc.run_once()).removed["listing_backfill"])
        assert set(await listed(client, parent=job.id)) == set(shards)
        assert set(await listed(client, include_shards=True)) == {job.id, *shards}
        assert await listed(client) == [job.id]  # still hidden from the default listing, now by the index too
        assert (await gc.run_once()).removed["listing_backfill"] == []


async def test_the_periodic_upkeep_indexes_unlisted_shards_a_batch_per_run(settings):
    """After the manager's first (whole) backfill, each run indexes at most a batch of shards and goes on from there
    the next run: 5 unlisted shards with a batch of 2 take three runs."""
    from manager.listing_upkeep import ListingUpkeep

    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": list(range(1, 51))}, ["user.f0"], num_shards=5)
        plain = await client.offline_query({"user.id": [1]}, ["user.f0"])
        shards = await unlist_shards(client, job.id)
        upkeep = ListingUpkeep(client.redis, client.keys, client.store, batch=2)
        runs = [(await upkeep.backfill()).changed for _ in range(4)]
        assert [len(r or []) for r in runs] == [2, 2, 1, 0], runs
        assert set(await listed(client, parent=job.id)) == set(shards)
        assert set(await listed(client)) == {job.id, plain.id}
