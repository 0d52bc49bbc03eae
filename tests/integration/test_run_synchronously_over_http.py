"""`offline_query(run_asynchronously=False)` over HTTP: the SDK submits, waits on the long poll and returns the
finished job as the direct mode's in-process run does (same type, same result, same surface); interrupted, the
job is cancelled. Before, it raised `InvalidQueryError("run_asynchronously")` over HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from jobqueue import AsyncJobQueueClient, JobQueueClient, JobStatus, LocalResult
from jobqueue.auth.identity import Role
from jobqueue.errors import JobStateError
from jobqueue.handles import AsyncLocalResult
from tests.api_support import http_settings, make_token
from tests.helpers import eventually, worker_running
from tests.integration.test_wait_events import waiting_clients

IDS = {"user.id": [1, 2, 3]}
TIMES = [datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC), datetime(2024, 1, 4, tzinfo=UTC)]
OUTPUT = ["user.f0", "user.f1"]


async def test_async_run_over_http_returns_the_finished_job_like_the_direct_mode(settings, served):
    token = await make_token(settings, "alice", Role.USER, "risk")
    async with AsyncJobQueueClient(http_settings(settings, served, token)) as remote, \
            AsyncJobQueueClient(settings) as direct:
        local = await direct.offline_query(IDS, OUTPUT, TIMES, run_asynchronously=False)
        async with worker_running(settings):
            over_http = await asyncio.wait_for(
                remote.offline_query(IDS, OUTPUT, TIMES, run_asynchronously=False, query_name="sync"), 120)
        assert isinstance(over_http, AsyncLocalResult) and isinstance(local, AsyncLocalResult)
        record = await over_http.wait(timeout=1, show_progress=False)  # at once: it is finished
        assert record.status is JobStatus.SUCCEEDED and await over_http.status() is JobStatus.SUCCEEDED
        assert (record.owner, record.team, record.query_name) == ("alice", "risk", "sync")
        assert over_http.performance_summary is not None and over_http.performance_summary.rows_out == 3
        assert (await over_http.to_arrow()).equals(await local.to_arrow())
        assert (await over_http.to_pandas()).equals(await local.to_pandas())
        assert (await remote.get_job(over_http.id)).status is JobStatus.SUCCEEDED  # a job of the service
        with pytest.raises(JobStateError, match="already finished"):
            await over_http.cancel(wait=1)


async def test_sync_run_over_http_is_a_local_result_equal_to_the_direct_modes(settings, served):
    token = await make_token(settings, "alice", Role.USER, "risk")

    def both() -> tuple[object, object, bool]:
        with JobQueueClient(http_settings(settings, served, token)) as remote, JobQueueClient(settings) as direct:
            over_http = remote.offline_query(IDS, OUTPUT, TIMES, run_asynchronously=False)
            local = direct.offline_query(IDS, OUTPUT, TIMES, run_asynchronously=False)
            assert isinstance(over_http, LocalResult) and isinstance(local, LocalResult)
            assert over_http.wait(timeout=1, show_progress=False).status is JobStatus.SUCCEEDED
            return over_http.to_arrow(), local.to_arrow(), over_http.to_pandas().equals(local.to_pandas())

    async with worker_running(settings):
        over_http, local, same_frames = await asyncio.wait_for(asyncio.to_thread(both), 120)
    assert over_http.equals(local) and same_frames  # type: ignore[attr-defined]


async def test_an_interrupted_run_over_http_cancels_its_job(settings, served):
    """No consumer runs: the job stays queued; cancelling the waiting call cancels the job in the service."""
    token = await make_token(settings, "alice", Role.USER, "risk")
    async with AsyncJobQueueClient(http_settings(settings, served, token)) as remote, \
            AsyncJobQueueClient(settings) as direct:
        call = asyncio.create_task(remote.offline_query(IDS, OUTPUT, TIMES, run_asynchronously=False))
        jobs = await eventually(lambda: direct.jobs(owner="alice"), timeout=30, what="the submitted job")
        await eventually(lambda: waiting_clients(direct.redis, jobs[0].job_id), timeout=30,
                         what="the call waiting on the job's long poll")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        record = await direct.get_job(jobs[0].job_id)
        assert record.status is JobStatus.CANCELLED
