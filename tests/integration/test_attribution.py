"""Attribution round trip: what the SDK submits with a job (owner, team, tags, query_name, correlation_id) is in its
record, its performance summary, the consumer's log lines, `jobqueue jobs show`, the `jobqueue jobs` filters and the
per-team counters; a bad value is refused naming the field, with nothing staged."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import structlog

from jobqueue import AsyncJobQueueClient, InvalidQueryError, JobStatus
from jobqueue.attribution import default_owner
from jobqueue.keys import TeamCounterName
from jobqueue.logs import configure_logging
from manager.metrics import RedisCounters
from tests.helpers import worker_running

ATTRIBUTION = {"owner": "alice", "team": "risk", "tags": {"project": "churn", "cost.center": "42"},
               "query_name": "daily.churn", "correlation_id": "req-7f3a"}


def cli(settings, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_REDIS_URL=settings.redis_url, JOBQUEUE_ENVIRONMENT=settings.environment,
               JOBQUEUE_HOME=str(settings.home), COLUMNS="250")
    p = subprocess.run([sys.executable, "-m", "jobqueue.cli.main", *args], env=env, capture_output=True, text=True,
                       timeout=60)
    return p.returncode, p.stdout + p.stderr


async def test_attribution_round_trip(settings, capsys):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("json", "info")
    try:
        async with AsyncJobQueueClient(settings) as client:
            job = await client.offline_query({"user.id": [1, 2]}, ["user.f0"], **ATTRIBUTION)
            other = await client.offline_query({"user.id": [3]}, ["user.f0"], team="growth")  # the defaults
            async with worker_running(settings):
                assert (await job.wait(timeout=30, show_progress=False)).status is JobStatus.SUCCEEDED
                assert (await other.wait(timeout=30, show_progress=False)).status is JobStatus.SUCCEEDED
            record = await client.get_job(job.id)
            defaulted = await client.get_job(other.id)
            counters = {k.decode(): float(v) for k, v in (await client.redis.hgetall(client.keys.counters)).items()}
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        structlog.reset_defaults()

    assert {k: getattr(record, k) for k in ATTRIBUTION} == ATTRIBUTION
    assert record.summary is not None and {k: getattr(record.summary, k) for k in ATTRIBUTION} == ATTRIBUTION
    # the defaults: the OS user, no tags nor query name, a correlation id of its own
    assert (defaulted.owner, defaulted.team, defaulted.tags, defaulted.query_name) == (
        default_owner(), "growth", {}, None)
    assert defaulted.correlation_id and defaulted.correlation_id != record.correlation_id

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    succeeded = [e for e in lines if e["event"] == "job succeeded" and e.get("job_id") == job.id]
    assert len(succeeded) == 1, lines
    assert {k: succeeded[0].get(k) for k in ATTRIBUTION} == ATTRIBUTION

    code, out = cli(settings, "jobs", "show", job.id, "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert {k: shown[k] for k in ATTRIBUTION} == ATTRIBUTION
    assert {k: shown["summary"][k] for k in ATTRIBUTION} == ATTRIBUTION
    for args, listed, left_out in [
        (["--owner", "alice"], job.id, other.id),
        (["--team", "growth"], other.id, job.id),
        (["--tag", "project=churn", "--tag", "cost.center=42"], job.id, other.id),
        (["--query-name", "daily.churn"], job.id, other.id),
    ]:
        code, out = cli(settings, "jobs", *args)
        assert code == 0 and listed in out and left_out not in out, (args, out)
    code, out = cli(settings, "jobs", "--tag", "project")
    assert code == 1 and "--tag: 'project' must be NAME=VALUE" in out, out

    # per team: submitted and outcomes, in the same counters hash as the group counters; exported with a team label
    assert counters[TeamCounterName.SUBMITTED.field("risk")] == 1
    assert counters[TeamCounterName.SUCCEEDED.field("risk")] == 1
    assert counters[TeamCounterName.SUCCEEDED.field("growth")] == 1
    exported = RedisCounters(max_teams=1)
    exported.snapshot = counters
    samples = {(s.labels["team"], s.labels["event"]): s.value for f in exported.collect()
               if f.name == "jobqueue_team_jobs" for s in f.samples}
    assert samples == {("growth", "submitted"): 1, ("growth", "succeeded"): 1,  # named first: sorted
                       ("_other", "submitted"): 1, ("_other", "succeeded"): 1}


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"tags": {"bad key": "x"}}, "tags['bad key']"),
    ({"team": "Risk"}, "team"),
    ({"owner": ""}, "owner"),
])
async def test_a_bad_attribution_is_refused_before_anything_is_staged(settings, kwargs, field):
    async with AsyncJobQueueClient(settings) as client:
        with pytest.raises(InvalidQueryError) as e:
            await client.offline_query({"user.id": [1]}, ["user.f0"], **kwargs)
        assert e.value.field == field and "use " in e.value.message, str(e.value)
        assert await client.store.recent() == []
    assert not (settings.home / "staging").exists() or not any((settings.home / "staging").rglob("*.parquet"))


async def test_a_scheduled_run_carries_its_schedules_attribution(settings, store):
    from datetime import UTC, datetime

    from jobqueue.groups import parse_groups
    from jobqueue.registry import load_registry
    from jobqueue.schedules import parse_schedules
    from manager.scheduler import Scheduler

    body = {"schedule": "0 * * * *", "output": ["user.f0"], "input": {"user.id": [1]}}
    schedules, errors = parse_schedules({"schedules": [
        {"name": "named", **body, "owner": "risk-bot", "team": "risk", "tags": {"project": "churn"},
         "query_name": "hourly.churn"},
        {"name": "plain", **body},
        {"name": "bad", **body, "tags": {"no spaces": "x"}},
    ]}, load_registry(store.registry_path), parse_groups(None))
    assert len(errors) == 1 and "schedule 'bad'" in errors[0] and "tags['no spaces']" in errors[0], errors
    due = datetime(2026, 5, 1, 10, tzinfo=UTC)
    async with AsyncJobQueueClient(settings) as client:
        scheduler = Scheduler(client, schedules, errors)
        named = await client.get_job((await scheduler.fire(schedules["named"], due)).job_id or "")
        plain = await client.get_job((await scheduler.fire(schedules["plain"], due)).job_id or "")
    assert (named.owner, named.team, named.tags, named.query_name, named.correlation_id) == (
        "risk-bot", "risk", {"project": "churn"}, "hourly.churn", named.job_id)
    assert (plain.owner, plain.team, plain.tags, plain.query_name, plain.correlation_id) == (
        "scheduler", None, {}, "plain", plain.job_id)
