"""When the embedded server of `jobqueue up` is gone, `wait()` says the job was lost with it (that server keeps
nothing) and how to resubmit, instead of promising to retry. A real embedded Valkey is started and stopped.
"""

from __future__ import annotations

import time

import pytest

from jobqueue import AsyncJobQueueClient
from jobqueue.embedded import embedded_redis
from jobqueue.errors import JobLostError

QUERY = dict(input={"user.id": [1, 2]}, output=["user.f0"])


@pytest.mark.parametrize("url_set", [False, True], ids=["url-from-redis.url", "url-set-to-the-embedded-one"])
async def test_wait_says_the_job_was_lost_with_the_embedded_server(settings, tmp_path, url_set):
    home = tmp_path / "up-home"
    with embedded_redis(home) as url:
        local = settings.model_copy(update={"home": home, "redis_url": url if url_set else None})
        client = AsyncJobQueueClient(local)
        job = await client.offline_query(**QUERY)  # no manager runs: it stays queued, in that server only
        assert client.on_embedded_server
        if url_set:  # keep the record, as a killed `jobqueue up` would; the server itself is gone all the same
            record = (home / "redis.url").read_text()
    if url_set:
        (home / "redis.url").write_text(record)
    started = time.monotonic()
    with pytest.raises(JobLostError) as info:
        await job.wait(timeout=20)
    assert time.monotonic() - started < 10  # said at once, not after the timeout
    message = str(info.value)
    assert f"job {job.id} is lost" in message and "embedded server" in message, message
    assert "`jobqueue up` again" in message and "submit the query again" in message, message
    assert "retry" not in message
    await client.aclose()


async def test_an_external_redis_is_still_waited_out(settings):
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(**QUERY)
        assert not client.on_embedded_server
        with pytest.raises(TimeoutError):  # queued, no manager: wait() times out, it does not call the job lost
            await job.wait(timeout=0.5)
