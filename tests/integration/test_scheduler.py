"""Scheduled queries on a real Redis with an injected clock: exactly-once firing, policies, pause."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from jobqueue import AsyncJobQueueClient, JobStatus
from jobqueue.groups import parse_groups
from jobqueue.registry import load_registry
from jobqueue.schedules import parse_schedules
from manager.scheduler import Scheduler
from tests.helpers import eventually, running_manager, with_groups

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)


def definition(**kw):
    return {"name": "hourly", "schedule": "0 * * * *", "output": ["user.f0"], "input": {"user.id": [1, 2]}, **kw}


def make(client, store, **kw):
    schedules, errors = parse_schedules({"schedules": [definition(**kw)]}, load_registry(store.registry_path),
                                        parse_groups(None))
    assert not errors
    return Scheduler(client, schedules, errors)


async def runs(client, name="hourly"):
    return [j.decode() for j in await client.redis.zrange(client.keys.schedule_runs(name), 0, -1)]


async def test_each_due_time_fires_once_across_restarts_and_managers(settings, store):
    async with AsyncJobQueueClient(settings) as a, AsyncJobQueueClient(settings) as b:
        first, second = make(a, store), make(b, store)
        assert await first.tick(T0 - timedelta(minutes=1)) == []  # armed
        due = T0 + timedelta(hours=1)
        fired = [*await first.tick(due + timedelta(seconds=5)), *await second.tick(due + timedelta(seconds=6))]
        submitted = [f for f in fired if f.job_id]
        assert len(submitted) == 1
        assert submitted[0].job_id == f"scheduled:{settings.environment}:hourly:20260501T110000Z"
        restarted = make(a, store)  # a new process: state comes from Redis only
        assert [f for f in await restarted.tick(due + timedelta(seconds=30)) if f.job_id] == []
        assert await runs(a) == [submitted[0].job_id]
        record = await a.get_job(submitted[0].job_id)
        assert record.status is JobStatus.QUEUED and record.input_rows == 2


async def test_two_managers_firing_the_same_due_time_at_once_submit_it_once(settings, store):
    import asyncio

    async with AsyncJobQueueClient(settings) as a, AsyncJobQueueClient(settings) as b:
        first, second = make(a, store, allow_overlap=True), make(b, store, allow_overlap=True)
        sq, due = first.schedules["hourly"], T0 + timedelta(hours=1)
        results = await asyncio.gather(*(s.fire(sq, due) for s in (first, second, first, second)))
        assert sum(1 for r in results if r.job_id) == 1
        assert len(await runs(a)) == 1
        assert await a.redis.zcard(a.keys.queue("default")) == 1  # enqueued once


@pytest.mark.parametrize(("policy", "expected"), [("skip", 0), ("run_once", 1)])
async def test_missed_runs_policy(settings, store, policy, expected):
    async with AsyncJobQueueClient(settings) as client:
        s = make(client, store, missed=policy)
        await s.tick(T0)
        await s.tick(T0 + timedelta(hours=5, minutes=30))  # the manager was down for five due times
        assert len(await runs(client)) == expected
        await s.tick(T0 + timedelta(hours=5, minutes=31))
        assert len(await runs(client)) == expected  # never a burst afterwards


async def test_overlap_skips_while_the_previous_run_is_queued(settings, store):
    async with AsyncJobQueueClient(settings) as client:
        s = make(client, store)
        await s.tick(T0)
        await s.tick(T0 + timedelta(hours=1, seconds=1))
        fired = await s.tick(T0 + timedelta(hours=2, seconds=1))
        assert fired[0].job_id is None and "is still queued" in fired[0].reason
        assert len(await runs(client)) == 1
        allowed = make(client, store, allow_overlap=True)
        await allowed.tick(T0 + timedelta(hours=3, seconds=1))
        assert len(await runs(client)) == 2


async def test_pause_and_resume(settings, store):
    async with AsyncJobQueueClient(settings) as client:
        s = make(client, store)
        await s.tick(T0)
        await client.redis.hset(client.keys.schedule("hourly"), "paused", "true")
        await s.tick(T0 + timedelta(hours=1, seconds=1))
        assert await runs(client) == []
        await client.redis.hset(client.keys.schedule("hourly"), "paused", "false")
        await s.tick(T0 + timedelta(hours=2, seconds=1))
        assert len(await runs(client)) == 1  # the paused hour is not caught up


def test_bad_definitions_are_reported_by_name_and_do_not_block_others(store):
    docs = [
        definition(name="good"),
        definition(name="badcron", schedule="61 * * * *"),
        definition(name="badgroup", resource_group="gpu"),
        definition(name="badfeature", output=["user.nope"]),
        definition(name="good"),
        definition(name="badtz", timezone="Mars/Olympus"),
    ]
    schedules, errors = parse_schedules({"schedules": docs}, load_registry(store.registry_path),
                                        parse_groups(None), "schedules.yaml")
    assert list(schedules) == ["good"]
    expected = ["'badcron'", "'badgroup'", "'badfeature'", "'good': duplicate name", "'badtz'"]
    assert len(errors) == len(expected)
    for error, words in zip(errors, expected, strict=True):
        assert error.startswith("schedules.yaml: schedule ") and words in error, error
    assert "bad cron expression" in errors[0] and "unknown resource group 'gpu'" in errors[1]
    assert "unknown feature 'user.nope'" in errors[2] and "unknown timezone" in errors[4]


async def test_manager_fires_a_requested_run_and_a_consumer_runs_it(settings, store, tmp_path):
    path = tmp_path / "schedules.yaml"
    path.write_text(yaml.safe_dump({"schedules": [definition(name="nightly", schedule="0 3 * * *")]}))
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 1}}, schedules_path=path)
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        await eventually(lambda: client.redis.hexists(client.keys.schedules, "nightly"), what="published")
        await client.redis.hset(client.keys.schedule("nightly"), "run_requested", datetime.now(UTC).isoformat())
        (job_id,) = await eventually(lambda: runs(client, "nightly"), what="run submitted")
        record = await client.job(job_id).wait(timeout=60, show_progress=False)
        assert record.status is JobStatus.SUCCEEDED and record.summary.rows_out == 2


def test_cli_lists_pauses_resumes_and_requests_runs(settings, store, redis_url, environment, tmp_path):
    import os
    import subprocess
    import sys

    async def publish():
        async with AsyncJobQueueClient(settings) as client:
            s = make(client, store)
            await s.publish()
            await s.tick(T0)
            await s.tick(T0 + timedelta(hours=1, seconds=1))  # one submitted run

    import asyncio

    asyncio.run(publish())
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_REDIS_URL=redis_url, JOBQUEUE_ENVIRONMENT=environment, JOBQUEUE_HOME=str(tmp_path),
               COLUMNS="200")

    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", "schedules", *args], env=env,
                           capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout + p.stderr

    code, out = cli()
    assert code == 0 and "hourly" in out and "0 * * * * (UTC)" in out and "queued" in out, out
    assert cli("pause", "hourly")[0] == 0 and "paused" in cli()[1]
    assert cli("resume", "hourly")[0] == 0 and "enabled" in cli()[1]
    code, out = cli("runs", "hourly")
    assert code == 0 and f"scheduled:{environment}:hourly:20260501T110000Z" in out, out
    assert cli("run", "hourly")[0] == 0
    code, out = cli("pause", "nope")
    assert code == 1 and "no schedule 'nope'; known schedules: hourly" in out, out
    import redis as sync_redis

    r = sync_redis.Redis.from_url(redis_url)
    assert r.hget(f"jobqueue:{environment}:schedule:hourly", "run_requested")
    r.close()


async def test_a_parquet_spine_is_used_as_the_input(settings, store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    spine = tmp_path / "spine.parquet"
    pq.write_table(pa.table({"user.id": pa.array([3, 4, 5], pa.int64()), "extra": ["a", "b", "c"]}), spine)
    async with AsyncJobQueueClient(settings) as client:
        s = make(client, store, input=None, input_path=str(spine))
        fired = await s.fire(s.schedules["hourly"], T0)
        record = await client.get_job(fired.job_id)
        assert record.input_rows == 3 and record.output == ["user.f0"]
