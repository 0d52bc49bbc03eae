"""Consumer logs are JSON lines, and every line about a job carries its id (arq's lines included)."""

from __future__ import annotations

import json
import logging

import structlog

from jobqueue import AsyncJobQueueClient, JobStatus
from jobqueue.logs import configure_logging
from tests.helpers import worker_running


async def test_every_job_line_carries_the_job_id(settings, capsys):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("json", "info")
    try:
        async with AsyncJobQueueClient(settings) as client:
            job = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])
            async with worker_running(settings):
                assert (await job.wait(timeout=30, show_progress=False)).status is JobStatus.SUCCEEDED
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        structlog.reset_defaults()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    about_job = [e for e in lines if job.id in e["event"] or e["event"] == "job succeeded"]
    assert len(about_job) >= 3  # arq's start and end lines, and ours
    assert all(e.get("job_id") == job.id for e in about_job), about_job
    assert all(e.get("consumer_id") and e.get("resource_group") == "default" for e in about_job)
