"""Helpers of the console tests: sign in over plain HTTP, read a form's CSRF token, queued jobs of an owner."""

from __future__ import annotations

import re

import httpx

from jobqueue import AsyncJobQueueClient
from jobqueue.settings import Settings

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
