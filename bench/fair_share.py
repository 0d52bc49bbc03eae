"""Fair share against FIFO: owner A submits 200 jobs, then owner B submits 5; how long do B's jobs wait?

    python bench/fair_share.py [--a-jobs 200] [--b-jobs 5] [--consumers 4] [--job-seconds 0.15]

Real Redis (REDIS_URL, else 127.0.0.1:6379, else an embedded Valkey), each run under its own environment prefix,
deleted afterwards. Fixed consumers, not a manager: `--consumers` real consumers (`consumer.worker.build_worker`, one
job each) run in this process for the whole case, and take jobs as they are submitted. Jobs are submitted through
the SDK's own path (`submit_prepared`: staged input, the submit script), so the queue score is the real one; only
the DuckDB query is replaced by a stand-in that sleeps `--job-seconds`. The same case runs with fair share
(JOBQUEUE_FAIR_SHARE=true) and with plain FIFO, one after the other.

B's wait is each job's `started_at - submitted_at` (its record); its p99 (of 5: the largest) is divided by one job's
run time (the median `finished_at - started_at` of the case). The last line printed is one JSON object with
`fair_b_wait_over_job_seconds` (target <= 3) and `fifo_b_wait_over_job_seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.consumer_overhead import REGISTRY, forget, redis_url  # noqa: E402
from consumer.worker import build_worker  # noqa: E402
from jobqueue.attribution import Attribution  # noqa: E402
from jobqueue.client import AsyncJobQueueClient, PreparedSubmission  # noqa: E402
from jobqueue.engine.execute import QueryOutcome  # noqa: E402
from jobqueue.inputs import to_arrow, with_times  # noqa: E402
from jobqueue.models import JobRecord, PerformanceSummary, Priority, QueryJob  # noqa: E402
from jobqueue.settings import Settings  # noqa: E402


class SleepQuery:
    """Stands in for PreparedQuery: sleeps `seconds` (the class attribute; a query of known length)."""

    seconds = 0.15

    def __init__(self, job: QueryJob, registry: Any, settings: Settings, consumer_id: str, **_: Any) -> None:
        self.consumer_id = consumer_id

    def progress(self) -> float:
        return 0.0

    def interrupt(self) -> None:
        pass

    def execute(self) -> QueryOutcome:
        time.sleep(self.seconds)
        summary = PerformanceSummary(
            consumer_id=self.consumer_id, spill_enabled=True, spilled_bytes=0, memory_limit_bytes=1,
            peak_memory_bytes=0, threads=1, rows_in=1, rows_out=1, queue_wait_seconds=0.0,
            execution_seconds=self.seconds, total_seconds=self.seconds)
        return QueryOutcome(result_uri="none", summary=summary)


async def submit(client: AsyncJobQueueClient, owner: str, n: int, *, team: str | None = None,
                 priority: Priority = Priority.NORMAL, group: str = "default") -> list[str]:
    """`n` jobs of `owner`, one after the other, through the SDK's submit path; their ids."""
    ids = []
    for _ in range(n):
        now = datetime.now(UTC)
        job_id = uuid.uuid4().hex
        await client.submit_prepared(PreparedSubmission(
            with_times(to_arrow({"user.id": [1]}), None, now), ["user.id"], ["user.f"], group, job_id, now,
            attribution=Attribution(owner=owner, team=team), priority=priority))
        ids.append(job_id)
    return ids


@contextlib.asynccontextmanager
async def consumers(settings: Settings, n: int, group: str = "default") -> AsyncIterator[list[Any]]:
    """`n` real consumers (one job at a time each) in this process, running `SleepQuery`; stopped at the end."""
    workers = [build_worker(settings, group, 1, registry=REGISTRY, prepare=SleepQuery) for _ in range(n)]
    tasks = [asyncio.create_task(w.async_run()) for w in workers]
    try:
        yield workers
    finally:
        deadline = time.monotonic() + 60
        while any(not t.done() for w in workers for t in w.tasks.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # their jobs end first: arq's close cancels unfinished ones mid-write
        for w in workers:
            await w.close()
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def all_done(client: AsyncJobQueueClient, ids: list[str], timeout: float) -> list[JobRecord]:
    deadline = time.monotonic() + timeout
    while True:
        records = [await client.store.get(i) for i in ids]
        if all(r is not None and r.status.is_final for r in records):
            return [r for r in records if r is not None]
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs not done after {timeout} s")
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Outcome:
    b_waits: list[float]  # seconds, submit to start, of B's jobs
    job_seconds: float  # median run time of one job
    b_last_start_rank: int  # 1-based: the place of B's last job among every job's start
    a_jobs_after_b: int  # A's jobs that started after B's last one
    a_jobs_during_b: int  # A's jobs that started after B's first submission and before B's last start

    @property
    def b_p99_over_job(self) -> float:
        ordered = sorted(self.b_waits)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] / self.job_seconds


async def run_case(settings: Settings, a_jobs: int, b_jobs: int, n_consumers: int, job_seconds: float) -> Outcome:
    SleepQuery.seconds = job_seconds
    async with AsyncJobQueueClient(settings, registry=REGISTRY) as client, consumers(settings, n_consumers):
        a = await submit(client, "owner-a", a_jobs)
        b = await submit(client, "owner-b", b_jobs)
        records = await all_done(client, a + b, timeout=60 + 4 * (a_jobs + b_jobs) * job_seconds)
    started = sorted(records, key=lambda r: r.started_at or datetime.max.replace(tzinfo=UTC))
    b_set = set(b)
    b_ranks = [i for i, r in enumerate(started, 1) if r.job_id in b_set]
    waits = [(r.started_at - r.submitted_at).total_seconds() for r in records if r.job_id in b_set and r.started_at]
    runs = [(r.finished_at - r.started_at).total_seconds() for r in records if r.started_at and r.finished_at]
    b_submitted = min(r.submitted_at for r in records if r.job_id in b_set)
    b_last = started[b_ranks[-1] - 1].started_at
    during = sum(1 for r in records if r.job_id not in b_set and r.started_at and b_submitted < r.started_at < b_last)
    return Outcome(waits, statistics.median(runs), b_ranks[-1], len(started) - b_ranks[-1], during)


async def fair_figures(url: str, a_jobs: int = 200, b_jobs: int = 5, n_consumers: int = 4,
                       job_seconds: float = 0.15) -> dict[str, Any]:
    """The case with fair share, then with plain FIFO, on the Redis at `url`: the figures of both (also the last
    keys of bench/sharded.py, issue 17's benchmark)."""
    figures: dict[str, Any] = {"a_jobs": a_jobs, "b_jobs": b_jobs, "consumers": n_consumers}
    for mode, fair in (("fair", True), ("fifo", False)):
        with tempfile.TemporaryDirectory() as home:
            settings = Settings(redis_url=url, environment=f"bench-fair-{uuid.uuid4().hex[:8]}", home=Path(home),
                                log_level="error", consumer_poll_seconds=0.05, fair_share=fair)
            try:
                out = await run_case(settings, a_jobs, b_jobs, n_consumers, job_seconds)
            finally:
                await forget(settings)
        print(f"{mode}: B waits {[round(w, 2) for w in out.b_waits]} s, one job {out.job_seconds:.3f} s, B's "
              f"last start {out.b_last_start_rank} of {a_jobs + b_jobs} ({out.a_jobs_during_b} of A's "
              f"started between B's submission and it, {out.a_jobs_after_b} after it)", flush=True)
        figures[f"{mode}_job_seconds"] = round(out.job_seconds, 3)
        figures[f"{mode}_b_last_start_rank"] = out.b_last_start_rank
        figures[f"{mode}_a_jobs_started_during_b"] = out.a_jobs_during_b
        figures[f"{mode}_b_wait_over_job_seconds"] = round(out.b_p99_over_job, 2)
    return figures


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a-jobs", type=int, default=200)
    p.add_argument("--b-jobs", type=int, default=5)
    p.add_argument("--consumers", type=int, default=4)
    p.add_argument("--job-seconds", type=float, default=0.15)
    args = p.parse_args()
    url, server = redis_url()
    try:
        figures = await fair_figures(url, args.a_jobs, args.b_jobs, args.consumers, args.job_seconds)
    finally:
        if server:
            server.stop()
    print(json.dumps(figures))


if __name__ == "__main__":
    import logging

    from jobqueue.logs import configure_logging

    configure_logging("json", "error")
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115
    asyncio.run(main())
