"""Helpers of the console tests: sign in over plain HTTP, read a form's CSRF token, queued jobs of an owner, and a
signed-in console on a served API with the job store beside it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.jobstore import JobStore
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from jobqueue.settings import Settings
from tests.api_support import make_token

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


async def sign_in(http: httpx.AsyncClient, token: str, next_path: str = "/jobs") -> httpx.Response:
    """POST the sign-in form; the client keeps the session cookie."""
    return await http.post("/signin", data={"token": token, "next": next_path})


def csrf_of(page: str) -> str:
    m = CSRF_RE.search(page)
    assert m, "the page has no CSRF field"
    return m.group(1)


async def queued_jobs(settings: Settings, *owners: str, team: str = "risk") -> list[str]:
    """One queued job per owner (no consumer runs), in that order."""
    ids = []
    async with AsyncJobQueueClient(settings) as client:
        for i, owner in enumerate(owners):
            job = await client.offline_query({"user.id": [i + 1]}, ["user.f0"], owner=owner, team=team,
                                             query_name=f"q.{owner}")
            ids.append(job.id)
    return ids


@asynccontextmanager
async def signed_in_console(settings: Settings, owner: str, team: str = "risk",
                            role: Role = Role.USER) -> AsyncIterator[tuple[httpx.AsyncClient, JobStore]]:
    """A served API (in a thread) and an HTTP client signed in to its console as `owner`, with the environment's
    `JobStore` to change jobs under it."""
    token = await make_token(settings, owner, role, team)
    redis = connect_redis(settings)
    try:
        with api_in_thread(settings, port=0) as url:
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                await sign_in(http, token)
                yield http, JobStore(redis, Keys.for_environment(settings.environment), settings.job_ttl_seconds)
    finally:
        await redis.aclose()
