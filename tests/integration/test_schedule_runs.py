"""`GET /v1/schedules/{name}/runs`, `client.schedule_runs(name)` and `jobqueue schedules runs NAME` in both modes:
the same runs (newest first, an expired record said as such, duration and spilled bytes of a finished one), an
unknown schedule named with the known ones, and the limit checked. Before, the runs were direct-mode only (the CLI
read Redis itself) and there was no endpoint."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from jobqueue import AsyncJobQueueClient, InvalidQueryError, JobStatus
from jobqueue.auth.identity import Role
from jobqueue.errors import JobQueueError
from jobqueue.keys import Keys
from jobqueue.schedules import ScheduledQuery
from jobqueue.settings import Settings
from tests.api_support import http_settings, make_token
from tests.helpers import worker_running

EXPIRED = "e" * 32  # a run whose job record is gone


async def _schedule_with_runs(settings: Settings) -> list[str]:
    """A published schedule `nightly` with three runs, oldest first: a finished job, an expired record, a queued
    job (runs are indexed as the scheduler indexes them: by due time)."""
    keys = Keys.for_environment(settings.environment)
    sq = ScheduledQuery(name="nightly", schedule="0 2 * * *", output=["user.f0"], input={"user.id": [1]})
    async with AsyncJobQueueClient(settings) as client:
        await client.redis.hset(keys.schedules, "nightly", sq.model_dump_json())
        finished = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])
        async with worker_running(settings):
            await finished.wait(timeout=60, show_progress=False)
        queued = await client.offline_query({"user.id": [3]}, ["user.f0"])
        await client.redis.zadd(keys.schedule_runs("nightly"), {finished.id: 1, EXPIRED: 2, queued.id: 3})
    return [finished.id, EXPIRED, queued.id]


async def test_runs_over_http_equal_the_direct_modes(settings, served):
    runs = await _schedule_with_runs(settings)
    token = await make_token(settings, "alice", Role.USER, "risk")  # a user: reading schedules is every role's
    async with AsyncJobQueueClient(http_settings(settings, served, token)) as remote, \
            AsyncJobQueueClient(settings) as direct:
        over_http, local = await remote.schedule_runs("nightly"), await direct.schedule_runs("nightly")
        assert over_http == local and over_http.name == "nightly"
        assert [r.job_id for r in local.runs] == runs[::-1]  # newest first
        queued, expired, finished = local.runs
        assert queued.status is JobStatus.QUEUED and queued.duration_seconds is None
        assert expired.status is None and expired.submitted_at is None
        assert finished.status is JobStatus.SUCCEEDED and finished.duration_seconds is not None
        assert finished.spilled_bytes == 0
        assert [r.job_id for r in (await remote.schedule_runs("nightly", limit=1)).runs] == [runs[2]]
        for client in (remote, direct):
            with pytest.raises(JobQueueError, match="no schedule 'weekly'; known schedules: nightly"):
                await client.schedule_runs("weekly")
            with pytest.raises(InvalidQueryError) as e:
                await client.schedule_runs("nightly", limit=0)
            assert e.value.field == "limit"


def _cli(settings: Settings, *args: str, **env: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    clean.update(COLUMNS="250", JOBQUEUE_HOME=str(settings.home.parent / "cli-home"), **env)
    p = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", "schedules", "runs", *args], env=clean,
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


async def test_cli_runs_over_http_and_direct(settings, served):
    runs = await _schedule_with_runs(settings)
    token = await make_token(settings, "alice", Role.USER, "risk")
    direct_env = {"JOBQUEUE_REDIS_URL": settings.resolved_redis_url(), "JOBQUEUE_ENVIRONMENT": settings.environment}
    outputs = await asyncio.gather(
        asyncio.to_thread(_cli, settings, "nightly", "--api-url", served, "--token", token),
        asyncio.to_thread(_cli, settings, "nightly", **direct_env),
        asyncio.to_thread(_cli, settings, "weekly", "--api-url", served, "--token", token),
        asyncio.to_thread(_cli, settings, "nightly", "--limit", "1", "--api-url", served, "--token", token))
    (http_code, http_out), (direct_code, direct_out), (unknown_code, unknown_out), (one_code, one_out) = outputs
    for code, out in ((http_code, http_out), (direct_code, direct_out)):
        assert code == 0, out
        assert all(job_id in out for job_id in runs), out
        assert "succeeded" in out and "expired record" in out and "queued" in out, out
        assert out.index(runs[2]) < out.index(runs[1]) < out.index(runs[0]), out  # newest first
    assert unknown_code != 0 and "known schedules: nightly" in unknown_out, unknown_out
    assert one_code == 0 and runs[2] in one_out and runs[0] not in one_out, one_out
