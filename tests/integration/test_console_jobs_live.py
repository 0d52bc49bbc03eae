"""The jobs table's live stream (`GET /live/jobs?ids=...&new=1`, `jobqueue.console.live_list`) over real HTTP
against the API process and the shared Redis: a change of a listed job is a `refresh` at once (the stream's own
check is an hour here, so only the published change can cause it), a burst of changes is at most one refresh a
second, a submission refreshes the first page, a job that changed before the stream subscribed is a refresh at once,
and a job the session may not read is dropped from the stream: a `user` learns nothing of another owner's job by
listing its id."""

from __future__ import annotations

import asyncio
import time

import pytest

from jobqueue import AsyncJobQueueClient
from tests.console_support import queued_jobs, signed_in_console
from tests.integration.test_console_detail import events, next_event


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"console_live_check_seconds": 3600.0})


async def quiet_for(stream, seconds: float):
    """The next event if one comes within `seconds`, else None."""
    try:
        return await asyncio.wait_for(anext(stream), seconds)
    except TimeoutError:
        return None


async def test_a_listed_jobs_change_refreshes_and_a_burst_is_one_refresh_a_second(settings):
    ids = await queued_jobs(settings, "alice", "alice", "alice", "alice")
    async with signed_in_console(settings, "alice") as (http, store):
        page = (await http.get("/jobs")).text
        assert 'data-live-src="/live/jobs?ids=' in page and "new=1" in page
        async with http.stream("GET", "/live/jobs", params={"ids": ",".join(ids)}) as response:
            assert response.status_code == 200
            stream = events(response)
            assert await next_event(stream) == ("live", "subscribed")
            await store.request_cancel(ids[0])
            assert await next_event(stream, timeout=30) == ("refresh", ids[0])
            first = time.monotonic()
            for job_id in ids[1:]:  # a burst: three changes at once
                await store.request_cancel(job_id)
            name, _ = await next_event(stream, timeout=30)
            assert name == "refresh"
            assert time.monotonic() - first >= 0.9  # held back to one a second after the first
            assert await quiet_for(stream, 2.5) is None  # and the burst was one refresh, not three


async def test_a_submission_refreshes_the_first_page_and_another_owners_job_is_not_followed(settings):
    alices, bobs = await queued_jobs(settings, "alice", "bob")
    async with signed_in_console(settings, "alice") as (http, store):
        async with http.stream("GET", "/live/jobs", params={"ids": bobs}) as spy, \
                http.stream("GET", "/live/jobs", params={"ids": alices, "new": "1"}) as mine:
            on_spy, on_mine = events(spy), events(mine)
            assert await next_event(on_spy) == await next_event(on_mine) == ("live", "subscribed")
            await store.request_cancel(bobs)  # bob's job changes: alice's stream of it says nothing
            async with AsyncJobQueueClient(settings) as client:
                await client.offline_query({"user.id": [7]}, ["user.f0"], owner="carol", team="x")
            assert await next_event(on_mine, timeout=30) == ("refresh", "new")
            assert await quiet_for(on_spy, 2.0) is None
        bad = await http.get("/live/jobs", params={"ids": "a,b c"})
        assert bad.status_code in (400, 422)


async def test_a_job_that_changed_before_the_stream_subscribed_is_a_refresh_at_once(settings):
    """The page read the job queued; it was cancelled before the page's stream subscribed (no message can tell)."""
    (job_id,) = await queued_jobs(settings, "alice")
    async with signed_in_console(settings, "alice") as (http, store):
        assert "states=queued" in (await http.get("/jobs")).text
        await store.request_cancel(job_id)
        async with http.stream("GET", "/live/jobs", params={"ids": job_id, "states": "queued"}) as response:
            stream = events(response)
            assert await next_event(stream) == ("live", "subscribed")
            assert await next_event(stream, timeout=30) == ("refresh", job_id)
