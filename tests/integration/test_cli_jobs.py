"""`jobqueue jobs`, `jobs show`, `cancel` and `status --json` as an operator runs them."""

from __future__ import annotations

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
