"""A queued job says why it waits: in its record (`wait_reason`; its code a `WaitCode` value), `jobqueue jobs show`,
and `wait()`'s progress display and timeout error. The manager's last tick is only ever faked by running a real
manager and stopping it."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from jobqueue import AsyncJobQueueClient, JobStatus, ResourceRequests
from jobqueue.groups import load_groups
from jobqueue.keys import MANAGER_TICK_AT, Keys
from manager.backends.local import LocalBackend
from manager.reconcile import Reconciler
from tests.helpers import eventually, running_manager, with_groups
from tests.integration.test_cli_jobs import cli

PAUSED = ResourceRequests(resource_group="paused")


async def test_a_job_on_a_group_with_max_instances_0_says_so(settings, redis_url, environment, tmp_path, capsys):
    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1]}, ["user.f0"], resources=PAUSED)

        async def blocked():
            reason = (await client.get_job(job.id)).wait_reason
            return reason if reason and reason.code == "max_instances_zero" else None

        reason = await eventually(blocked, what="the max_instances reason, once the manager has published the group")
        assert reason.message.startswith("group 'paused' has max_instances 0, so no consumer runs its jobs"), reason

        code, out = await asyncio.to_thread(cli, redis_url, environment, tmp_path, "jobs", "show", job.id[:8], "--json")
        assert code == 0, out
        shown = json.loads(out)
        assert shown["status"] == "queued" and shown["wait_reason"]["code"] == "max_instances_zero", out
        assert "has max_instances 0" in shown["wait_reason"]["message"], out

        with pytest.raises(TimeoutError, match=r"still queued after the timeout: group 'paused' has max_instances 0"):
            await job.wait(timeout=0.3, show_progress=False)
        capsys.readouterr()
        with pytest.raises(TimeoutError):
            await job.wait(timeout=0.3, show_progress=True)
        shown_above_the_bar = " ".join(capsys.readouterr().out.split())
        assert f"job {job.id[:8]} waits: group 'paused' has max_instances 0" in shown_above_the_bar


async def test_with_no_manager_ever_run_the_reason_says_so(settings, redis_url, environment, tmp_path):
    async with AsyncJobQueueClient(settings) as client:  # the local groups config lets it submit
        job = await client.offline_query({"user.id": [1]}, ["user.f0"])
        reason = (await client.get_job(job.id)).wait_reason
        assert reason is not None and reason.code == "no_manager"
        assert reason.message == (f"no manager has ever run in environment {environment!r}: start `jobqueue up` or "
                                  "deploy the manager")
        with pytest.raises(TimeoutError, match="still queued after the timeout: no manager has ever run"):
            await job.wait(timeout=0.2, show_progress=False)
    code, out = await asyncio.to_thread(cli, redis_url, environment, tmp_path, "jobs", "show", job.id, "--json")
    assert code == 0 and json.loads(out)["wait_reason"]["message"] == reason.message, out


async def test_when_the_manager_stopped_the_reason_says_since_when(settings, redis_url, environment, tmp_path,
                                                                   arq_redis):
    keys = Keys.for_environment(environment)
    async with running_manager(settings):
        await eventually(lambda: arq_redis.hget(keys.manager_state, MANAGER_TICK_AT), what="the manager's first tick")
    last_tick = float(await arq_redis.hget(keys.manager_state, MANAGER_TICK_AT))
    async with AsyncJobQueueClient(settings) as client:  # submitted to the group the stopped manager published
        job = await client.offline_query({"user.id": [1]}, ["user.f0"])

        async def stale():  # past 10 ticks, at least 5 s
            reason = (await client.get_job(job.id)).wait_reason
            return reason if reason and reason.code == "manager_stale" else None

        reason = await eventually(stale, what="the reason calling the manager gone")
        assert re.fullmatch(r"no manager has ticked for \d+ s \(last tick \d\d:\d\d:\d\d UTC\): start `jobqueue up` "
                            r"or check the manager", reason.message), reason.message
        from jobqueue.waiting import clock_time

        assert f"(last tick {clock_time(last_tick, last_tick)})" in reason.message
        with pytest.raises(TimeoutError, match="still queued after the timeout: no manager has ticked for"):
            await job.wait(timeout=0.2, show_progress=False)
    code, out = await asyncio.to_thread(cli, redis_url, environment, tmp_path, "jobs", "show", job.id, "--json")
    assert code == 0 and "no manager has ticked for" in json.loads(out)["wait_reason"]["message"], out


async def test_a_consumer_starting_and_the_jobs_ahead_then_no_reason_once_it_ran(settings, arq_redis):
    backend = LocalBackend(settings)
    try:
        async with AsyncJobQueueClient(settings) as client:
            first = await client.offline_query({"user.id": [1]}, ["user.f0"])
            second = await client.offline_query({"user.id": [2]}, ["user.f0"])
            reconciler = Reconciler(arq_redis, settings, load_groups(settings.resource_groups_path), backend)
            await reconciler.publish_groups()
            await reconciler.tick()  # asks for the default group's one consumer and starts its process
            # the process has yet to import jobqueue before it can say it is there: it is starting
            reason = (await client.get_job(second.id)).wait_reason
            assert reason is not None and reason.code == "consumer_starting", reason
            assert re.fullmatch(r"consumer starting \(scaled up \d+ s ago\); 1 job ahead of this one",
                                reason.message), reason.message
            assert (await client.get_job(first.id)).wait_reason.message.endswith("; no jobs ahead of this one")

            for job in (first, second):
                record = await job.wait(timeout=60, show_progress=False)
                assert record.status is JobStatus.SUCCEEDED and record.wait_reason is None
    finally:
        await backend.aclose(timeout=30)
