"""The jobs table's live stream (`GET /live/jobs?ids=...&new=1`, `jobqueue.console.live_list`) over real HTTP
against the API process and the shared Redis: a change of a listed job is a `refresh` at once (the stream's own
check is an hour here, so only the published change can cause it), a burst of changes is at most one refresh a
second, a submission refreshes the first page, and a job the session may not read is dropped from the stream: a
`user` learns nothing of another owner's job by listing its id."""

from __future__ import annotations

import asyncio
import time

from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.jobstore import JobStore
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from tests.api_support import make_token
from tests.console_support import queued_jobs, sign_in
from tests.integration.test_console_detail import console, events, next_event


async def test_a_listed_jobs_change_refreshes_and_a_burst_is_one_refresh_a_second(settings):
    settings = settings.model_copy(update={"console_live_check_seconds": 3600.0})
    ids = await queued_jobs(settings, "alice", "alice", "alice", "alice")
    token = await make_token(settings, "alice", Role.USER, "risk")
    redis = connect_redis(settings)
    store = JobStore(redis, Keys.for_environment(settings.environment), settings.job_ttl_seconds)
    try:
        with api_in_thread(settings, port=0) as url:
            async with console(url) as http:
                await sign_in(http, token)
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
                    try:  # and the burst was one refresh, not three
                        extra = await asyncio.wait_for(anext(stream), 2.5)
                    except TimeoutError:
                        extra = None
                    assert extra is None, extra
    finally:
        await redis.aclose()


async def test_a_submission_refreshes_the_first_page_and_another_owners_job_is_not_followed(settings):
    settings = settings.model_copy(update={"console_live_check_seconds": 3600.0})
    alices, bobs = await queued_jobs(settings, "alice", "bob")
    token = await make_token(settings, "alice", Role.USER, "risk")
    redis = connect_redis(settings)
    store = JobStore(redis, Keys.for_environment(settings.environment), settings.job_ttl_seconds)
    try:
        with api_in_thread(settings, port=0) as url:
            async with console(url) as http:
                await sign_in(http, token)
                async with http.stream("GET", "/live/jobs", params={"ids": bobs}) as spy, \
                        http.stream("GET", "/live/jobs", params={"ids": alices, "new": "1"}) as mine:
                    on_spy, on_mine = events(spy), events(mine)
                    assert await next_event(on_spy) == await next_event(on_mine) == ("live", "subscribed")
                    await store.request_cancel(bobs)  # bob's job changes: alice's stream of it says nothing
                    async with AsyncJobQueueClient(settings) as client:
                        await client.offline_query({"user.id": [7]}, ["user.f0"], owner="carol", team="x")
                    assert await next_event(on_mine, timeout=30) == ("refresh", "new")
                    try:
                        heard = await asyncio.wait_for(anext(on_spy), 2.0)
                    except TimeoutError:
                        heard = None
                    assert heard is None, heard
                bad = await http.get("/live/jobs", params={"ids": "a,b c"})
                assert bad.status_code in (400, 422)
    finally:
        await redis.aclose()


async def test_a_job_that_changed_before_the_stream_subscribed_is_a_refresh_at_once(settings):
    """The page read the job queued; it was cancelled before the page's stream subscribed (no message can tell)."""
    settings = settings.model_copy(update={"console_live_check_seconds": 3600.0})
    (job_id,) = await queued_jobs(settings, "alice")
    token = await make_token(settings, "alice", Role.USER, "risk")
    redis = connect_redis(settings)
    store = JobStore(redis, Keys.for_environment(settings.environment), settings.job_ttl_seconds)
    try:
        with api_in_thread(settings, port=0) as url:
            async with console(url) as http:
                await sign_in(http, token)
                assert "states=queued" in (await http.get("/jobs")).text
                await store.request_cancel(job_id)
                async with http.stream("GET", "/live/jobs", params={"ids": job_id, "states": "queued"}) as response:
                    stream = events(response)
                    assert await next_event(stream) == ("live", "subscribed")
                    assert await next_event(stream, timeout=30) == ("refresh", job_id)
    finally:
        await redis.aclose()
