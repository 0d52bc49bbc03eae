"""`jobqueue jobs`, `jobs show`, `cancel` and `status --json` as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

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
    code, out = run("jobs", "show", other.id)
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
