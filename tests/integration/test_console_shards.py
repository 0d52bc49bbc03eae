"""A sharded query on the console: the parent's page lists its shards (state, rows, attempts) and how many are
done, a shard's page links back to its parent, and the parent's live stream follows its shards' changes (the
stream's own check is an hour here, so only a shard's published change can move it)."""

from __future__ import annotations

from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.jobstore import JobStore
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from tests.api_support import make_token
from tests.console_support import sign_in
from tests.integration.test_console_detail import console, events, next_event


async def test_the_parents_page_lists_its_shards_and_follows_them(settings):
    settings = settings.model_copy(update={"console_live_check_seconds": 3600.0})
    async with AsyncJobQueueClient(settings) as client:
        parent = await client.offline_query({"user.id": list(range(1, 61))}, ["user.f0"], owner="alice", team="risk",
                                            num_shards=3, num_workers=2)
        record = await client.get_job(parent.id)
    assert len(record.shard_ids) == 3
    token = await make_token(settings, "alice", Role.USER, "risk")
    redis = connect_redis(settings)
    store = JobStore(redis, Keys.for_environment(settings.environment), settings.job_ttl_seconds)
    try:
        with api_in_thread(settings, port=0) as url:
            async with console(url) as http:
                await sign_in(http, token)
                page = (await http.get(f"/jobs/{parent.id}")).text
                assert "0 of 3 shards done, at most 2 at once; 0 of 60 rows." in page
                assert all(f'data-shard="{s}"' in page for s in record.shard_ids)
                shard_page = (await http.get(f"/jobs/{record.shard_ids[1]}")).text
                assert f'href="/jobs/{parent.id}" data-testid="parent"' in shard_page
                async with http.stream("GET", f"/live/jobs/{parent.id}") as response:
                    stream = events(response)
                    assert (await next_event(stream))[0] == "card"
                    assert (await store.claim(record.shard_ids[0], "c-1", "default", 30)).claimed
                    name, card = await next_event(stream, timeout=30)
                    assert name == "card" and f'data-shard="{record.shard_ids[0]}"' in card
                    assert 'state-running">running' in card
    finally:
        await redis.aclose()
