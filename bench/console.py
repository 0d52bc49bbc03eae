"""Web console benchmark: server time of the console's pages with 100,000 jobs in Redis.

    python bench/console.py [--jobs 100000] [--runs 40] [--redis-url redis://127.0.0.1:6379]

Fills a unique environment (`bench-console-<hex>`) of the given Redis with `--jobs` jobs through `JobStore`'s own
scripts (submit, claim, final transitions, dequeue: what the SDK, consumers and the reaper call), 256 calls in flight
at a time, with a mix of owners (200, skewed), teams (12), groups (4), query names (30), tags (project: 20 values, env:
2) and states (about 5% queued, 3% running, 80% succeeded, 8% failed, 4% cancelled), submitted over the last 7 days.
The resource groups and the manager's last decisions are published as the manager publishes them (`<p>groups`,
`<p>group-states`); no manager runs, so nothing changes the jobs while pages are measured.

Then it starts the real API app (`python -m jobqueue.cli.main api`: uvicorn in a process of its own, as in production),
signs in to the console as an operator (and as a `user` for `jobs_page_user_p95_ms`), and requests each page `--runs`
times, after `--warmup` requests. Server time is the app's own `Server-Timing: app;dur=` header (request arrival to
response start, `jobqueue.api.timing`); client round trips are reported too. Every key of the environment (and arq's
keys of its jobs) is removed afterwards. The last line is one JSON object:

    jobs_page_p95_ms          /jobs, no filter (operator)
    jobs_filter_p95_ms_max    the slowest of /jobs with each single filter; `jobs_filter_p95_ms` has each one
    job_detail_p95_ms         /jobs/<id> of random jobs
    queues_page_p95_ms        /groups (the resource groups: ready, in flight, consumers, last decision)
    plus jobs_sorted_p95_ms (by wait, by duration), jobs_page_user_p95_ms, api_jobs_p95_ms, fill_seconds,
    load_average (1, 5, 15 min, before and after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis as sync_redis  # noqa: E402

from bench.api import api_process  # noqa: E402
from jobqueue.auth.identity import Role  # noqa: E402
from jobqueue.auth.tokens import TokenStore  # noqa: E402
from jobqueue.groups import ResourceGroup  # noqa: E402
from jobqueue.jobstore import JobStore  # noqa: E402
from jobqueue.keys import GroupState, Keys  # noqa: E402
from jobqueue.models import JobRecord, JobStatus  # noqa: E402
from jobqueue.redis import connect_redis  # noqa: E402
from jobqueue.settings import Settings  # noqa: E402

GROUPS = ("default", "gpu", "large", "batch")
TEAMS = tuple(f"team{i:02d}" for i in range(12))
OWNERS = tuple(f"user{i:03d}" for i in range(200))
QUERIES = tuple(f"query.{i:02d}" for i in range(30))
PROJECTS = tuple(f"p{i:02d}" for i in range(20))
IN_FLIGHT = 256
NOW = datetime.now(UTC)


def p95(values: list[float]) -> float:
    return round(statistics.quantiles(values, n=20)[-1], 2) if len(values) > 1 else round(values[0], 2)


class At:
    """A fixed clock for one JobStore call (each call of the fill has its own time)."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def job_plan(rng: random.Random, i: int) -> tuple[JobRecord, JobStatus, float, float]:
    """A job, the state it ends in, its wait and run seconds."""
    owner = OWNERS[min(int(rng.paretovariate(1.2)) - 1, len(OWNERS) - 1) if rng.random() < 0.5
                   else rng.randrange(len(OWNERS))]
    submitted = NOW - timedelta(seconds=rng.uniform(0, 7 * 86400))
    record = JobRecord(job_id=f"{uuid.uuid4().hex}", status=JobStatus.QUEUED, resource_group=rng.choice(GROUPS),
                       output=["user.f0"], input_rows=rng.randrange(1, 1_000_000), submitted_at=submitted,
                       owner=owner, team=TEAMS[hash(owner) % len(TEAMS)], query_name=rng.choice(QUERIES),
                       tags={"project": rng.choice(PROJECTS), "env": rng.choice(("prod", "dev"))})
    r = rng.random()
    state = (JobStatus.QUEUED if r < 0.05 else JobStatus.RUNNING if r < 0.08 else JobStatus.SUCCEEDED if r < 0.88
             else JobStatus.FAILED if r < 0.96 else JobStatus.CANCELLED)
    return record, state, rng.expovariate(1 / 30), rng.expovariate(1 / 120)


async def fill_one(redis: Any, keys: Keys, ttl: int, rng: random.Random, i: int) -> str:
    record, state, wait, ran = job_plan(rng, i)
    job, group = record.job_id, record.resource_group
    store = JobStore(redis, keys, ttl, At(record.submitted_at))
    await store.submit(record, keys.queue(group), json.dumps({"job": job}).encode(), ttl * 1000)
    if state is JobStatus.QUEUED:
        return job
    if state is JobStatus.CANCELLED and rng.random() < 0.5:
        await store.request_cancel(job)
        return job
    store.clock = At(record.submitted_at + timedelta(seconds=wait))
    await store.claim(job, f"{group}-consumer-{i % 7}", group, 3600)
    if state is JobStatus.RUNNING:
        return job
    store.clock = At(record.submitted_at + timedelta(seconds=wait + ran))
    await store.transition(job, [JobStatus.RUNNING], state, owner=f"{group}-consumer-{i % 7}", release=group,
                           finished_at=store.clock(), error="boom" if state is JobStatus.FAILED else None)
    await store.dequeue(job, group)
    return job


async def fill(settings: Settings, n: int) -> tuple[list[str], float]:
    redis = connect_redis(settings)
    keys = Keys.for_environment(settings.environment)
    rng = random.Random(16)
    ids: list[str] = []
    started = time.perf_counter()
    try:
        for start in range(0, n, IN_FLIGHT):
            ids += await asyncio.gather(*(fill_one(redis, keys, settings.job_ttl_seconds, rng, i)
                                          for i in range(start, min(n, start + IN_FLIGHT))))
            if start % 10_000 == 0:
                print(f"filled {start:,} jobs in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        groups = {g: ResourceGroup(name=g, max_instances=4).model_dump_json() for g in GROUPS}
        states = {g: GroupState(current=1, desired=2, direction="up", reason="queue", ready=40, in_flight=5,
                                busy=1, live=1).to_json() for g in GROUPS}
        await cast(Awaitable[int], redis.hset(keys.groups, mapping=groups))  # as `Reconciler.publish_groups` does
        await cast(Awaitable[int], redis.hset(keys.group_states, mapping=states))
    finally:
        await redis.aclose()
    return ids, time.perf_counter() - started


async def measure(url: str, token: str, paths: list[str], runs: int, warmup: int) -> tuple[float | None, float | None]:
    """p95 of the server time and of the client round trip (ms) of `runs` requests spread over `paths`; (None, None)
    when the page does not take these parameters (422: an older version, for a side-by-side run). A server without
    the `Server-Timing` header (an older version) is timed by the client's round trip."""
    server, client = [], []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        signed = await http.post("/signin", data={"token": token, "next": "/jobs"})
        assert signed.status_code == 303, signed.text
        for i in range(warmup + runs):
            path = paths[i % len(paths)]
            started = time.perf_counter()
            page = await http.get(path)
            took = (time.perf_counter() - started) * 1000
            if page.status_code == 422:
                return None, None
            assert page.status_code == 200, (path, page.status_code, page.text[:500])
            m = re.search(r"app;dur=([0-9.]+)", page.headers.get("server-timing", ""))
            if i >= warmup:
                server.append(float(m.group(1)) if m else took)
                client.append(took)
    return p95(server), p95(client)


async def api_p95(url: str, token: str, runs: int) -> float:
    times = []
    async with httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(runs + 3):
            page = await http.get("/v1/jobs", params={"limit": 50})
            assert page.status_code == 200
            m = re.search(r"app;dur=([0-9.]+)", page.headers.get("server-timing", ""))
            times.append(float(m.group(1)) if m else float("nan"))
    return p95(times[3:])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    environment = f"bench-console-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url=args.redis_url, environment=environment, log_level="warning")
    keys = Keys.for_environment(environment)
    out: dict[str, Any] = {"jobs": args.jobs, "runs": args.runs, "load_average_before": os.getloadavg(),
                           "server": "uvicorn, `jobqueue api` in its own process (1 worker)"}
    r = sync_redis.Redis.from_url(args.redis_url)
    ids: list[str] = []
    try:
        ids, out["fill_seconds"] = await fill(settings, args.jobs)
        rng = random.Random(5)
        tokens = TokenStore(connect_redis(settings), keys)
        operator, _ = await tokens.create("bench-ops", Role.OPERATOR)
        some = json.loads(cast(bytes | None, r.hget(keys.job(rng.choice(ids)), "owner")) or b'"user000"')
        user, _ = await tokens.create(some, Role.USER, None)
        await tokens.redis.aclose()
        hour_ago = (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
        six_days = (NOW - timedelta(days=6)).strftime("%Y-%m-%dT%H:%M:%S")
        filters = {
            "owner": [f"/jobs?owner={o}" for o in ("user000", "user050", "user199")],
            "team": [f"/jobs?team={t}" for t in TEAMS[:4]],
            "state_queued": ["/jobs?state=queued"], "state_running": ["/jobs?state=running"],
            "state_succeeded": ["/jobs?state=succeeded"], "state_cancelled": ["/jobs?state=cancelled"],
            "resource_group": [f"/jobs?resource_group={g}" for g in GROUPS],
            "tag": [f"/jobs?tag=project%3D{p}" for p in PROJECTS[:4]],
            "query_name": [f"/jobs?query_name={q}" for q in QUERIES[:4]],
            "submitted_after": [f"/jobs?submitted_after={hour_ago}"],
            "submitted_before": [f"/jobs?submitted_before={six_days}"],
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
        env.update(JOBQUEUE_REDIS_URL=args.redis_url, JOBQUEUE_ENVIRONMENT=environment, JOBQUEUE_LOG_LEVEL="warning",
                   PYTHONPATH=str(ROOT))
        with tempfile.TemporaryDirectory() as tmp:
            env["JOBQUEUE_HOME"] = tmp
            with api_process(env, Path(tmp), 1) as url:
                w = args.warmup
                out["jobs_page_p95_ms"], out["jobs_page_client_p95_ms"] = await measure(
                    url, operator, ["/jobs"], args.runs, w)
                each = {name: (await measure(url, operator, paths, args.runs, w))[0]
                        for name, paths in filters.items()}
                out["jobs_filter_p95_ms"] = each
                measured = {k: v for k, v in each.items() if v is not None}
                out["jobs_filter_p95_ms_max"] = max(measured.values())
                out["jobs_filter_slowest"] = max(measured, key=lambda k: measured[k])
                out["jobs_sorted_p95_ms"] = {s: (await measure(url, operator, [f"/jobs?sort={s}"], args.runs, w))[0]
                                             for s in ("wait", "duration")}
                out["jobs_page_user_p95_ms"] = (await measure(url, user, ["/jobs"], args.runs, w))[0]
                out["job_detail_p95_ms"], out["job_detail_client_p95_ms"] = await measure(
                    url, operator, [f"/jobs/{rng.choice(ids)}" for _ in range(args.runs)], args.runs, w)
                out["queues_page_p95_ms"], out["queues_page_client_p95_ms"] = await measure(
                    url, operator, ["/groups"], args.runs, w)
                out["api_jobs_p95_ms"] = await api_p95(url, operator, args.runs)
    finally:
        doomed = [keys.arq_job(i) for i in ids]
        for start in range(0, len(doomed), 5000):
            r.delete(*doomed[start:start + 5000])
        batch = list(r.scan_iter(match=f"{keys.prefix}*", count=5000))
        for start in range(0, len(batch), 5000):
            r.delete(*batch[start:start + 5000])
        left = sum(1 for _ in r.scan_iter(match=f"{keys.prefix}*", count=5000))
        out["keys_left"] = left
        r.close()
    out["load_average_after"] = os.getloadavg()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    out = asyncio.run(run(p.parse_args()))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
