"""A sharded query on the console: the parent's page lists its shards (state, rows, attempts) and how many are
done, a shard's page links back to its parent, and the parent's live stream follows its shards' changes (the
stream's own check is an hour here, so only a shard's published change can move it)."""

from __future__ import annotations

from jobqueue import AsyncJobQueueClient
from tests.console_support import signed_in_console
from tests.integration.test_console_detail import events, next_event


async def test_the_parents_page_lists_its_shards_and_follows_them(settings):
    settings = settings.model_copy(update={"console_live_check_seconds": 3600.0})
    async with AsyncJobQueueClient(settings) as client:
        parent = await client.offline_query({"user.id": list(range(1, 61))}, ["user.f0"], owner="alice", team="risk",
                                            num_shards=3, num_workers=2)
        record = await client.get_job(parent.id)
    assert len(record.shard_ids) == 3
    async with signed_in_console(settings, "alice") as (http, store):
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
