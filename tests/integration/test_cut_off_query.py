"""A query cut off at the end of a drain is handed back by its consumer, however long DuckDB takes to let go.

Until the interrupted query's thread has stopped, the consumer keeps the job's heartbeat alive: had it lapsed,
the manager's reaper would take the consumer for lost and count the attempt (failing a job with no retries
left) although the consumer is alive and about to hand the job back.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any

from consumer.worker import build_worker
from jobqueue import AsyncJobQueueClient, JobStatus
from jobqueue.engine.duckdb_run import QueryInterrupted
from manager.reaper import Reaper, ReapReport
from tests.helpers import eventually, stop_worker, worker_running

HEARTBEAT_TTL = 1.5  # fractional: the heartbeat must live 1.5 s, not a truncated 1 s


class SlowToStopRun:
    def __init__(self) -> None:
        self.interrupted = threading.Event()
        self.let_go = threading.Event()

    def progress(self) -> float:
        return 0.5

    def interrupt(self) -> None:
        self.interrupted.set()


class SlowToStopQuery:
    """Stands in for PreparedQuery: runs until interrupted, then stops only when the test lets it go."""

    def __init__(self) -> None:
        self.run = SlowToStopRun()

    def progress(self) -> float:
        return self.run.progress()

    def interrupt(self) -> None:
        self.run.interrupt()

    def execute(self) -> Any:
        self.run.interrupted.wait(60)
        self.run.let_go.wait(60)
        raise QueryInterrupted("interrupted")


async def test_a_cut_off_query_slow_to_stop_keeps_its_heartbeat_and_is_handed_back(settings):
    settings = settings.model_copy(update={"job_heartbeat_ttl_seconds": HEARTBEAT_TTL, "consumer_drain_seconds": 0})
    queries: list[SlowToStopQuery] = []

    def prepare(*_: Any, **__: Any) -> SlowToStopQuery:
        queries.append(SlowToStopQuery())
        return queries[-1]

    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1, 2]}, ["user.f0"], max_retries=0)
        worker = build_worker(settings, "default", max_jobs=1, prepare=prepare)
        task = asyncio.create_task(worker.async_run())
        try:
            await eventually(lambda: has_status(job, JobStatus.RUNNING), what="job running")
            assert 1000 < await client.redis.pttl(client.keys.heartbeat(job.id)) <= 1500
            worker.handle_sig_wait_for_completion(signal.SIGTERM)  # a drain with no grace: the query is cut off
            (query,) = queries
            await eventually(query.run.interrupted.is_set, what="query interrupted")

            # DuckDB takes three heartbeat TTLs to let go; the manager's reaper runs all along
            reaper = Reaper(client.redis, client.keys, client.store, HEARTBEAT_TTL)
            loop = asyncio.get_running_loop()
            until = loop.time() + 3 * HEARTBEAT_TTL
            while loop.time() < until:
                running = await client.redis.hgetall(client.keys.running("default"))
                observed = {"default": {k.decode(): v.decode() for k, v in running.items()}}
                assert observed["default"], "the job stays in the group's running entries"
                assert await reaper.run(observed) == ReapReport(), "a consumer winding a query down is not lost"
                await asyncio.sleep(0.1)
            assert await has_status(job, JobStatus.RUNNING)

            query.run.let_go.set()
            await eventually(lambda: has_status(job, JobStatus.QUEUED), what="job handed back")
        finally:
            await stop_worker(worker, task)

        record = await job.record()
        assert record.attempts == 0 and record.errors == [], "a cut-off run does not use up a retry"
        queued = await client.redis.zscore(client.keys.queue("default"), client.keys.arq_id(job.id))
        assert queued is not None, "still queued"

        # the next consumer runs it: attempt 1 of max_retries=0 is allowed
        async with worker_running(settings):
            record = await job.wait(timeout=30, show_progress=False)
        assert record.status is JobStatus.SUCCEEDED and record.attempts == 1 and record.errors == []


async def has_status(job: Any, status: JobStatus) -> bool:
    return (await job.record()).status is status
