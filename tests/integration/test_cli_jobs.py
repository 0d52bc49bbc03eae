"""`jobqueue jobs`, `jobs show`, `cancel` and `status --json` as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from jobqueue import AsyncJobQueueClient, JobStatus, ResourceRequests
from tests.helpers import with_groups


def cli(redis_url, environment, home, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_REDIS_URL=redis_url, JOBQUEUE_ENVIRONMENT=environment, JOBQUEUE_HOME=str(home),
               COLUMNS="250")
    p = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", *args], env=env, capture_output=True,
                       text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


async def test_jobs_show_and_cancel(settings, redis_url, environment, tmp_path):
    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})
    paused = ResourceRequests(resource_group="paused")
    async with AsyncJobQueueClient(settings) as client:
        queued = await client.offline_query({"user.id": [1]}, ["user.f0"], resources=paused)
        other = await client.offline_query({"user.id": [2]}, ["user.f0"], resources=paused)
        await client.cancel(other.id)
    run = lambda *a: cli(redis_url, environment, tmp_path, *a)  # noqa: E731
    code, out = run("jobs")
    assert code == 0 and queued.id in out and other.id in out, out
    code, out = run("jobs", "--state", "queued")
    assert code == 0 and queued.id in out and other.id not in out, out
    code, out = run("jobs", "show", other.id, "--json")
    assert code == 0 and json.loads(out)["status"] == "cancelled", out
    code, out = run("cancel", queued.id)
    assert code == 0 and f"job {queued.id} is cancelled" in out, out
    async with AsyncJobQueueClient(settings) as client:
        assert (await client.get_job(queued.id)).status is JobStatus.CANCELLED
    code, out = run("jobs", "show", "nope")
    assert code == 1 and "no job 'nope'" in out, out


def test_status_json_without_a_manager_is_empty(redis_url, environment, tmp_path):
    code, out = cli(redis_url, environment, tmp_path, "status", "--json")
    assert code == 0 and json.loads(out) == []


async def test_status_shows_groups_the_manager_published(settings, redis_url, environment, tmp_path):
    from tests.helpers import eventually, running_manager

    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        await client.offline_query({"user.id": [1]}, ["user.f0"], resources=ResourceRequests(resource_group="paused"))

        async def reported():  # the CLI runs in a thread, so the manager's loop keeps ticking meanwhile
            code, out = await asyncio.to_thread(cli, redis_url, environment, tmp_path, "status", "--json")
            rows = {r["group"]: r for r in json.loads(out)} if code == 0 else {}
            return rows if rows.get("paused", {}).get("ready") == 1 else None

        rows = await eventually(reported, what="status with the queued job")
    assert rows["paused"]["max"] == 0 and rows["paused"]["desired"] == 0
    assert rows["paused"]["oldest_wait_seconds"] >= 0 and rows["default"]["ready"] == 0
    assert rows["paused"]["consumers_ready"] == 0 and rows["paused"]["decision"] == "steady"
    code, out = cli(redis_url, environment, tmp_path, "status")
    assert code == 0 and "paused" in out and "oldest wait" in out, out


async def test_job_id_prefixes_and_jobs_cancel(settings, redis_url, environment, tmp_path):
    """A unique prefix names a job in `jobs show`, `jobs cancel` and the SDK; a shared one lists the candidates."""
    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})
    paused = ResourceRequests(resource_group="paused")
    async with AsyncJobQueueClient(settings) as client:
        jobs = [await client.offline_query({"user.id": [i]}, ["user.f0"], resources=paused) for i in range(40)]
    ids = [j.id for j in jobs]
    by_first = {}
    for i in ids:
        by_first.setdefault(i[0], []).append(i)
    shared = next(c for c, members in by_first.items() if len(members) > 1)  # 40 ids over 16 hex digits
    target = ids[0]
    unique = next(target[:n] for n in range(1, 33) if sum(i.startswith(target[:n]) for i in ids) == 1)
    run = lambda *a: cli(redis_url, environment, tmp_path, *a)  # noqa: E731

    code, out = run("jobs", "show", unique, "--json")
    assert code == 0 and json.loads(out)["job_id"] == target, out
    code, out = run("jobs", "show", shared)
    assert code == 1 and f"job id prefix '{shared}' matches {len(by_first[shared])} jobs" in out, out
    assert all(i in out for i in sorted(by_first[shared])[:10]) and "Traceback" not in out, out
    code, out = run("jobs", "show", "zz")
    assert code == 1 and "no job 'zz'" in out, out
    code, out = run("jobs", "--help")
    assert code == 0 and "cancel" in out, out
    code, out = run("jobs", "cancel", unique)
    assert code == 0 and f"job {target} is cancelled" in out, out
    code, out = run("cancel", ids[1][:12])
    assert code == 0 and f"job {ids[1]} is cancelled" in out, out

    from jobqueue import JobQueueClient
    from jobqueue.errors import AmbiguousJobIdError, JobNotFoundError

    async with AsyncJobQueueClient(settings) as client:
        assert (await client.get_job(ids[2][:12])).job_id == ids[2]
        handle = client.job(ids[2][:12])
        assert await handle.status() is JobStatus.QUEUED and handle.id == ids[2]
        for bad, error in ((shared, AmbiguousJobIdError), ("zz", JobNotFoundError), ("", JobNotFoundError),
                           (ids[3][:6] + "*", JobNotFoundError)):
            try:
                await client.get_job(bad)
            except error:
                pass
            else:
                raise AssertionError(f"{bad!r} did not raise {error.__name__}")
    with JobQueueClient(settings) as sync_client:
        assert sync_client.job(ids[4][:12]).id == ids[4]
        assert sync_client.cancel(ids[4][:12], wait=0).status is JobStatus.CANCELLED


def test_empty_schedules_say_how_to_add_one(redis_url, environment, tmp_path):
    code, out = cli(redis_url, environment, tmp_path, "schedules")
    assert code == 0 and "no schedules" in out and "JOBQUEUE_SCHEDULES_PATH" in out, out


@pytest.mark.parametrize("log_format", ["json", "console"])  # console: what `jobqueue up` in a terminal gets
async def test_jobs_logs_shows_the_consumer_lines_of_one_job(settings, redis_url, environment, log_format):
    from tests.helpers import running_manager

    settings = settings.model_copy(update={"log_format": log_format})
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])
        other = await client.offline_query({"user.id": [3]}, ["user.f0"])
        for handle in (job, other):
            assert (await handle.wait(timeout=120, show_progress=False)).status is JobStatus.SUCCEEDED
    code, out = await asyncio.to_thread(cli, redis_url, environment, settings.home, "jobs", "logs", job.id[:10])
    assert code == 0 and "job succeeded" in out and "consumer_id=" in out, out
    assert other.id not in out and "Traceback" not in out, out
    code, out = await asyncio.to_thread(cli, redis_url, environment, settings.home, "jobs", "logs", "f" * 32)
    assert code == 0 and f"no log lines of job {'f' * 32}" in out, out
