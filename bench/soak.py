"""Soak: the one-machine stack under a steady submit rate for N minutes, with busy consumers killed.

    python bench/soak.py [--minutes 5] [--rate 4] [--kill-every 20] [--heartbeat-ttl 5]

A real `jobqueue manager` process (local backend) scales consumer processes for two resource
groups on REDIS_URL (else an embedded Valkey). Small point-in-time queries are submitted at
`--rate` per second for `--minutes`; every `--kill-every` seconds one consumer that holds a job is
SIGKILLed. Then the run is drained: every job must reach a final state.

Figures: jobs per second, p50/p99 queue wait (submitted -> started of the last attempt), lost
(accepted jobs that did not succeed), duplicated (result objects beyond one per job), and the
manager's resident memory after warm-up and at the end; memory must be flat (end/start <= 1.25).
The last line is one JSON object with `jobs`, `lost`, `duplicated`, `wait_p99_seconds`,
`manager_rss_start_bytes` and `manager_rss_end_bytes` (and more). Exit status 1 if a job was lost
or duplicated or memory grew.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from bench import percentile  # noqa: E402
from jobqueue import AsyncJobQueueClient, ResourceRequests  # noqa: E402
from jobqueue.embedded import embedded_redis  # noqa: E402
from jobqueue.models import ConsumerInfo  # noqa: E402
from jobqueue.sample import write_sample_store  # noqa: E402
from jobqueue.settings import Settings  # noqa: E402

GROUPS = ("soak-a", "soak-b")
FINAL = {"succeeded", "failed", "cancelled", "expired"}
MAX_RSS_GROWTH = 1.25


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")



class Load:
    """The submitter, the consumer killer and the manager's RSS sampler, sharing one client."""

    def __init__(self, args: argparse.Namespace, client: AsyncJobQueueClient, manager_pid: int) -> None:
        self.args, self.client, self.manager_pid = args, client, manager_pid
        self.rng = random.Random(11)
        self.ids: list[str] = []
        self.kills = 0
        self.rss: list[tuple[float, int]] = []
        self.started = time.monotonic()
        self.end_submit = self.started + args.minutes * 60

    async def submit(self) -> None:
        interval, n = 1.0 / self.args.rate, 0
        while time.monotonic() < self.end_submit:
            job = await self.client.offline_query(
                {"user.id": [self.rng.randrange(5_000) for _ in range(20)]}, ["user.f0", "user.f1"],
                max_retries=50, resources=ResourceRequests(resource_group=GROUPS[n % len(GROUPS)]))
            self.ids.append(job.id)
            n += 1
            await asyncio.sleep(max(0.0, self.started + n * interval - time.monotonic()))

    async def kill(self) -> None:
        """Every `--kill-every` seconds, SIGKILL one consumer that holds a job (looked for over up to 5 s:
        small jobs take tens of milliseconds)."""
        while time.monotonic() < self.end_submit:
            await asyncio.sleep(self.args.kill_every)
            look_until = time.monotonic() + 5.0
            while not await self._kill_one_busy() and time.monotonic() < look_until:
                await asyncio.sleep(0.02)

    async def _kill_one_busy(self) -> bool:
        busy = []
        for g in GROUPS:  # the running hash is exact (job -> consumer); the presence hash gives the pid
            holders = {v.decode() for v in (await self.client.redis.hgetall(self.client.keys.running(g))).values()}
            for raw in (await self.client.redis.hgetall(self.client.keys.consumers(g))).values():
                info = ConsumerInfo.model_validate_json(raw)
                if info.consumer_id in holders and not info.draining:
                    busy.append(info.pid)
        if not busy:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.rng.choice(busy), signal.SIGKILL)
            self.kills += 1
        return True

    def sample(self) -> None:
        self.rss.append((time.monotonic() - self.started, rss_bytes(self.manager_pid)))

    async def sample_every(self, seconds: float) -> None:
        while True:
            self.sample()
            await asyncio.sleep(seconds)

    async def statuses(self) -> list[str]:
        async with self.client.redis.pipeline(transaction=False) as pipe:
            for job_id in self.ids:
                pipe.hget(self.client.keys.job(job_id), "status")
            return [(s or b"").decode() for s in await pipe.execute()]

    async def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(s in FINAL for s in await self.statuses()) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)


async def soak(args: argparse.Namespace, redis_url: str, root: Path) -> dict[str, float | int]:
    store = write_sample_store(root / "store", users=5_000, snapshots=6, features=3)
    groups_path = root / "groups.yaml"
    groups_path.write_text(yaml.safe_dump({"resource_groups": {g: {"max_instances": 2} for g in GROUPS}}))
    settings = Settings(
        redis_url=redis_url, environment=f"soak-{uuid.uuid4().hex[:8]}", home=root / "home",
        registry_path=store.registry_path, resource_groups_path=groups_path, query_threads=1,
        job_heartbeat_ttl_seconds=args.heartbeat_ttl, retry_backoff_seconds=0.2, manager_http_port=-1,
        scale_to_zero_cooldown_seconds=30.0, log_format="json",
    )
    manager_log = (root / "manager.log").open("wb")
    manager = subprocess.Popen([sys.executable, "-m", "jobqueue.cli.main", "manager"],
                               env={**os.environ, **settings.to_env()}, stdout=manager_log, stderr=subprocess.STDOUT)
    try:
        async with AsyncJobQueueClient(settings) as client:
            while not await client.redis.hlen(client.keys.groups):  # the manager published its groups
                if manager.poll() is not None:
                    raise RuntimeError(f"the manager exited ({manager.returncode}); see {root / 'manager.log'}")
                await asyncio.sleep(0.1)
            load = Load(args, client, manager.pid)
            killer, sampler = asyncio.create_task(load.kill()), asyncio.create_task(load.sample_every(5.0))
            await load.submit()
            killer.cancel()
            print(f"submitted {len(load.ids)} jobs in {time.monotonic() - load.started:.0f} s; {load.kills} "
                  "consumers killed; draining", flush=True)
            await load.drain(args.drain_timeout)
            elapsed = time.monotonic() - load.started
            sampler.cancel()
            load.sample()
            records = [await client.get_job(job_id) for job_id in load.ids]
    finally:
        manager.send_signal(signal.SIGTERM)
        manager.wait(timeout=120)
        manager_log.close()

    results_root = settings.home / "results"
    files = {p.relative_to(results_root) for p in results_root.rglob("*") if p.is_file()}
    succeeded = [r for r in records if r.status.value == "succeeded"]
    expected = {Path(settings.environment) / r.job_id / "result.parquet" for r in succeeded}
    waits = [(r.started_at - r.submitted_at).total_seconds() for r in succeeded if r.started_at]
    warm = max(10.0, 0.1 * args.minutes * 60)  # the first samples include imports and the first scale-ups
    after_warmup = [b for t, b in load.rss if t >= warm] or [load.rss[-1][1]]
    return {
        "minutes": args.minutes, "jobs": len(load.ids), "succeeded": len(succeeded),
        "lost": len(load.ids) - len(succeeded), "duplicated": len(files - expected),
        "missing_results": len(expected - files), "consumers_killed": load.kills,
        "jobs_run_again": sum(r.attempts > 1 for r in records),
        "jobs_per_second": round(len(succeeded) / elapsed, 2),
        "wait_p50_seconds": round(percentile(waits, 0.50), 3), "wait_p99_seconds": round(percentile(waits, 0.99), 3),
        "manager_rss_start_bytes": after_warmup[0], "manager_rss_end_bytes": after_warmup[-1],
        "manager_rss_growth": round(after_warmup[-1] / after_warmup[0], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=4.0, help="jobs submitted per second")
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between consumer kills")
    parser.add_argument("--heartbeat-ttl", type=float, default=5.0, help="JOBQUEUE_JOB_HEARTBEAT_TTL_SECONDS")
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jobqueue-soak-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        url = os.environ.get("REDIS_URL") or stack.enter_context(embedded_redis(root / "valkey"))
        figures = asyncio.run(soak(args, url, root))
    print(f"{figures['jobs']} jobs over {args.minutes:g} min at {args.rate:g}/s, {figures['consumers_killed']} "
          f"consumers killed, {figures['jobs_run_again']} jobs ran again")
    print(f"throughput {figures['jobs_per_second']} jobs/s; wait p50 {figures['wait_p50_seconds']} s, "
          f"p99 {figures['wait_p99_seconds']} s")
    print(f"lost {figures['lost']}, duplicated {figures['duplicated']}")
    print(f"manager RSS {figures['manager_rss_start_bytes'] / 2**20:.1f} MiB after warm-up -> "
          f"{figures['manager_rss_end_bytes'] / 2**20:.1f} MiB at the end (x{figures['manager_rss_growth']})")
    print(json.dumps(figures))
    ok = (figures["lost"] == figures["duplicated"] == figures["missing_results"] == 0
          and figures["manager_rss_growth"] <= MAX_RSS_GROWTH)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
