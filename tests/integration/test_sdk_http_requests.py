"""`wait()` over HTTP reads the job once, long-polls, and takes the final record from the long poll's answer:
a job that finishes during the long poll costs two requests of `GET /v1/jobs/{job_id}`, not a third read of
a record that cannot change any more."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from jobqueue.client import AsyncJobQueueClient
from jobqueue.errors import JobCancelledError
from jobqueue.handles import AsyncJobHandle
from jobqueue.sample import sample_input
from tests.api_support import bearer, make_token
from tests.helpers import eventually


def _job_reads(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("jobqueue_api_requests_total{") and 'route="/v1/jobs/{job_id}"' in line
               and 'method="GET"' in line)


async def test_wait_takes_the_final_record_from_the_long_poll(settings):
    user = await make_token(settings, "alice", Role.USER, "risk")
    operator = bearer(await make_token(settings, "olga", Role.OPERATOR, "platform"))
    data, times = sample_input(50, 10, seed=1)
    with api_in_thread(settings, port=0) as url:
        async with AsyncJobQueueClient(settings, api_url=url, token=user) as client, \
                AsyncJobQueueClient(settings, direct=True) as direct, \
                httpx.AsyncClient(base_url=url, headers=operator, timeout=30) as http:
            handle = await client.offline_query(data, ["user.f0"], times)  # no consumer: it stays queued
            assert isinstance(handle, AsyncJobHandle)
            before = _job_reads((await http.get("/metrics")).text)
            waiting = asyncio.ensure_future(handle.wait(timeout=60, show_progress=False))
            # the read, then the long poll: the job is cancelled while it is held
            await eventually(lambda: _polling(http, before + 1), what="wait() holding a long poll")
            await direct.cancel(handle.id, wait=0)
            with pytest.raises(JobCancelledError):
                await waiting
            await eventually(lambda: _polling(http, before + 2), what="the long poll counted")  # after its answer
            assert _job_reads((await http.get("/metrics")).text) == before + 2


async def _polling(http: httpx.AsyncClient, reads: float) -> bool:
    # the counter counts answered requests: the first read is answered, the long poll is not yet
    return _job_reads((await http.get("/metrics")).text) >= reads
