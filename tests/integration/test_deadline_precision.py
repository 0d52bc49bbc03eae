"""A running query is interrupted at its completion deadline, not up to a watch tick (0.5 s) after it."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from consumer.job import WATCH_SECONDS
from jobqueue import AsyncJobQueueClient, JobFailedError, JobStatus
from jobqueue.engine.duckdb_run import QueryInterrupted
from tests.helpers import consumers_registered, worker_running


class RunsUntilInterrupted:
    """Stands in for PreparedQuery: runs until the watcher interrupts it, and notes when that was."""

    def __init__(self) -> None:
        self.started_at: float | None = None
        self.interrupted_at: float | None = None
        self.interrupted = threading.Event()

    def progress(self) -> float:
        return 0.5

    def interrupt(self) -> None:
        self.interrupted_at = time.time()
        self.interrupted.set()

    def execute(self) -> Any:
        self.started_at = time.time()
        self.interrupted.wait(30)
        raise QueryInterrupted("interrupted")


async def test_a_running_query_is_interrupted_at_its_deadline(settings):
    queries: list[RunsUntilInterrupted] = []

    def prepare(*_: Any, **__: Any) -> RunsUntilInterrupted:
        queries.append(RunsUntilInterrupted())
        return queries[-1]

    async with AsyncJobQueueClient(settings) as client, worker_running(settings, prepare=prepare):
        await consumers_registered(client.redis, client.keys, "default", 1)
        # 0.75 s: the query starts within a few ms, so its ticks (every 0.5 s from the start) fall 0.25 s
        # before and 0.25 s after the deadline; only a tick timed to the deadline interrupts it at once
        job = await client.offline_query({"user.id": [1, 2]}, ["user.f0"], max_retries=0,
                                         completion_deadline=timedelta(seconds=0.75))
        with pytest.raises(JobFailedError) as failed:
            await job.wait(timeout=30, show_progress=False)
    record = failed.value.record
    (query,) = queries
    assert record.status is JobStatus.EXPIRED and "while running" in (record.error or "")
    assert record.completion_deadline is not None and query.started_at is not None
    deadline = record.completion_deadline.timestamp()
    assert query.started_at < deadline - 0.5, f"started only {deadline - query.started_at:.3f} s before the deadline"
    assert query.interrupted_at is not None
    late = query.interrupted_at - deadline
    assert 0 <= late < WATCH_SECONDS / 5, f"interrupted {late:.3f} s after the deadline"
