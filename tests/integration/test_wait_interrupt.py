"""Ctrl-C in the synchronous `wait()`: the poller and the progress bar stop, and the user is told how to cancel."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from jobqueue import JobQueueClient, ResourceRequests
from tests.helpers import with_groups

SCRIPT = textwrap.dedent("""
    from jobqueue import JobQueueClient, ResourceRequests

    client = JobQueueClient()
    job = client.offline_query({"user.id": [1]}, ["user.f0"], resources=ResourceRequests(resource_group="paused"))
    print("submitted", job.id, flush=True)
    job.wait(show_progress=True)
    print("wait returned", flush=True)
""")


def test_ctrl_c_in_a_script_says_how_to_cancel_without_a_traceback(settings, tmp_path):
    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})  # the job stays queued
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_REDIS_URL=str(settings.redis_url), JOBQUEUE_ENVIRONMENT=settings.environment,
               JOBQUEUE_HOME=str(settings.home), JOBQUEUE_REGISTRY_PATH=str(settings.registry_path),
               JOBQUEUE_RESOURCE_GROUPS_PATH=str(settings.resource_groups_path))
    p = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        line = p.stdout.readline()  # blocks until the job is submitted (or the script died)
        assert line.startswith("submitted "), line + p.stderr.read()
        job_id = line.split()[1]
        time.sleep(0.5)  # let wait() poll a few times: the interrupt must land inside it, not before it
        p.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = p.communicate(timeout=20)
        took = time.monotonic() - sent
    finally:
        p.kill()
    assert f"job {job_id} is still queued; cancel it with `jobqueue cancel {job_id}` or `job.cancel()`" in err, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "wait returned" not in out and p.returncode in (1, -signal.SIGINT), (p.returncode, out, err)
    assert took < 6, took


def test_interrupted_wait_leaves_no_task_on_the_loop(settings, tmp_path, capsys):
    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})
    with JobQueueClient(settings) as client:
        job = client.offline_query({"user.id": [1]}, ["user.f0"], resources=ResourceRequests(resource_group="paused"))
        main = threading.main_thread().ident
        assert main is not None
        timer = threading.Timer(0.5, signal.pthread_kill, (main, signal.SIGINT))  # Ctrl-C, in this thread
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            job.wait(show_progress=True)
        timer.join()

        async def others() -> list[asyncio.Task]:
            return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

        assert client._loop.run(others()) == []
        assert f"job {job.id} is still queued" in capsys.readouterr().err
        assert job.status().value == "queued"  # the client goes on working after the interrupt
