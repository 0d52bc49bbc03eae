"""No silent fallback to a guessed Redis: without JOBQUEUE_REDIS_URL and without a running `jobqueue up`,
the SDK and the CLI fail before any connection, saying what to start or set. An explicit URL always wins.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jobqueue import AsyncJobQueueClient
from jobqueue.errors import NoServerError
from jobqueue.redis import connect_redis

QUERY = dict(input={"user.id": [1, 2]}, output=["user.f0"])


def _no_server(settings, tmp_path):
    return settings.model_copy(update={"redis_url": None, "home": tmp_path / "empty-home"})


async def test_sdk_without_a_server_fails_before_connecting(settings, tmp_path):
    bare = _no_server(settings, tmp_path)
    with pytest.raises(NoServerError) as info:  # the client is not even made: nothing reached 127.0.0.1:6379
        AsyncJobQueueClient(bare)
    message = str(info.value)
    assert "JOBQUEUE_REDIS_URL" in message and "`jobqueue up`" in message, message
    assert "JOBQUEUE_API_URL" in message and info.value.variables == ("JOBQUEUE_API_URL", "JOBQUEUE_REDIS_URL")
    assert "6379" not in message
    with pytest.raises(NoServerError):
        connect_redis(bare)


async def test_explicit_url_and_recorded_embedded_url_are_used(settings, tmp_path):
    async with AsyncJobQueueClient(settings) as client:  # explicit JOBQUEUE_REDIS_URL
        job = await client.offline_query(**QUERY)
        assert (await job.record()).status.value == "queued"
    recorded = _no_server(settings, tmp_path)
    recorded.home.mkdir(parents=True)
    recorded.embedded_redis_url_file.write_text(settings.redis_url + "\n")  # what a running `jobqueue up` writes
    async with AsyncJobQueueClient(recorded) as client:
        job = await client.offline_query(**QUERY)
        assert (await job.record()).status.value == "queued"


@pytest.mark.parametrize("command", [["up", "--no-embedded"], ["status"]])
def test_cli_without_a_server_says_what_to_start(settings, tmp_path, command):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_HOME=str(tmp_path / "empty-home"), JOBQUEUE_ENVIRONMENT=settings.environment,
               JOBQUEUE_MANAGER_HTTP_PORT="0", JOBQUEUE_LOG_FORMAT="json")
    done = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", *command], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    stderr = " ".join(done.stderr.split())
    assert done.returncode == 2, (done.returncode, done.stdout, stderr)
    assert "no jobqueue server" in stderr and "JOBQUEUE_REDIS_URL" in stderr and "jobqueue up" in stderr, stderr
    assert "Traceback" not in done.stderr
    assert "manager started" not in done.stdout + done.stderr
