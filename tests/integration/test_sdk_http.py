"""The SDK's HTTP mode against a served API: the same surface as the direct mode with only a URL and a token
(results, performance summary, prefixes, listing with filters, cancel one and by filter, schedules, registry),
the same `InvalidQueryError` field and text, and the HTTP answers mapped to the SDK's errors (401 names the
reason, 404 is `JobNotFoundError`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobqueue import (
    AsyncJobQueueClient,
    AuthenticationError,
    InvalidQueryError,
    JobNotFoundError,
    JobStatus,
    PerformanceSummary,
    ResourceRequests,
)
from jobqueue.auth.identity import Role
from jobqueue.connect import HttpTarget, resolve_target
from jobqueue.errors import NoServerError, PermissionDeniedError
from jobqueue.keys import Keys
from jobqueue.redis import connect_redis
from jobqueue.schedules import ScheduledQuery
from jobqueue.settings import Settings
from tests.api_support import http_settings, make_token
from tests.helpers import worker_running

TIMES = [datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC), datetime(2024, 1, 4, tzinfo=UTC)]


async def test_results_and_summary_equal_the_direct_mode(settings, served):
    token = await make_token(settings, "alice", Role.USER, "risk")
    async with AsyncJobQueueClient(http_settings(settings, served, token)) as remote, \
            AsyncJobQueueClient(settings) as direct:
        assert not remote.direct and remote.server == f"the jobqueue API at {served}"
        over_http = await remote.offline_query({"user.id": [1, 2, 3]}, ["user.f0", "user.f1"], TIMES,
                                               tags={"project": "churn"}, query_name="daily")
        local = await direct.offline_query({"user.id": [1, 2, 3]}, ["user.f0", "user.f1"], TIMES)
        async with worker_running(settings):
            record = await over_http.wait(timeout=60, show_progress=False)
            await local.wait(timeout=60, show_progress=False)
        assert (record.owner, record.team, record.tags, record.query_name) == ("alice", "risk",
                                                                               {"project": "churn"}, "daily")
        assert (await over_http.to_arrow()).equals(await local.to_arrow())
        assert (await over_http.to_pandas()).equals(await local.to_pandas())
        assert isinstance(over_http.performance_summary, PerformanceSummary)
        assert over_http.performance_summary.rows_out == 3
        assert (await remote.get_job(over_http.id[:10])).job_id == over_http.id  # a unique prefix
        with pytest.raises(JobNotFoundError):
            await remote.get_job(local.id)  # the direct job is the OS user's, not alice's: she cannot see it
        with pytest.raises(JobNotFoundError):
            await remote.get_job("f" * 32)


async def test_bad_input_raises_the_direct_modes_error(settings, served):
    token = await make_token(settings, "alice", Role.USER, "risk")
    cases = [dict(output=["user.nope"]), dict(output=["user.f0"], resources=ResourceRequests(resource_group="gpu")),
             dict(output=["user.f0"], tags={"1bad": "x"}), dict(output=["user.f0"], max_retries=500)]
    async with AsyncJobQueueClient(http_settings(settings, served, token)) as remote, \
            AsyncJobQueueClient(settings) as direct:
        for args in cases:
            with pytest.raises(InvalidQueryError) as over_http:
                await remote.offline_query({"user.id": [1, 2]}, **args)
            with pytest.raises(InvalidQueryError) as local:
                await direct.offline_query({"user.id": [1, 2]}, **args)
            assert (over_http.value.field, str(over_http.value)) == (local.value.field, str(local.value))
        with pytest.raises(InvalidQueryError) as owner:
            await remote.offline_query({"user.id": [1]}, ["user.f0"], owner="mallory")
        assert owner.value.field == "owner"
        assert await remote.jobs() == []


async def test_listing_cancel_schedules_and_registry(settings, served):
    alice = await make_token(settings, "alice", Role.USER, "risk")
    bob = await make_token(settings, "bob", Role.USER, "risk")
    admin = await make_token(settings, "adam", Role.ADMIN, "platform")
    redis = connect_redis(settings)
    sq = ScheduledQuery(name="nightly", schedule="0 2 * * *", output=["user.f0"], input={"user.id": [1]})
    await redis.hset(Keys.for_environment(settings.environment).schedules, "nightly", sq.model_dump_json())
    await redis.aclose()
    async with AsyncJobQueueClient(http_settings(settings, served, alice)) as a, \
            AsyncJobQueueClient(http_settings(settings, served, bob)) as b, \
            AsyncJobQueueClient(http_settings(settings, served, admin)) as root:
        applied = await root.apply_registry(settings.registry_path)
        assert applied.created and applied.version.number == 1
        again = await root.apply_registry(settings.registry_path)
        assert not again.created and again.version.version == applied.version.version
        with pytest.raises(PermissionDeniedError):
            await a.apply_registry(settings.registry_path)
        assert (await a.registry_current()).version == applied.version.version
        assert [v.number for v in (await a.registry_history()).versions] == [1]
        assert (await a.registry_version("1")).document == applied.version.document

        mine = [(await a.offline_query({"user.id": [i]}, ["user.f0"], query_name=f"q{i % 2}")).id for i in range(4)]
        theirs = (await b.offline_query({"user.id": [9]}, ["user.f0"], query_name="q0")).id
        listed = await a.jobs()
        assert [r.job_id for r in listed] == mine[::-1]  # newest first, and never bob's
        assert [r.job_id for r in await a.jobs(query_name="q0")] == [mine[2], mine[0]]
        assert [r.job_id for r in await a.jobs(limit=1)] == [mine[3]]
        assert {r.job_id for r in await root.jobs(state="queued")} == {*mine, theirs}
        assert (await a.cancel(mine[3])).status is JobStatus.CANCELLED
        done = await a.cancel_many(query_name="q0")
        assert sorted(done.job_ids) == sorted([mine[0], mine[2]])  # bob's q0 job is not alice's to cancel
        assert (await b.get_job(theirs)).status is JobStatus.QUEUED
        with pytest.raises(InvalidQueryError):
            await a.cancel_many()  # no condition: refused, never everything

        assert [s.name for s in (await a.schedules()).schedules] == ["nightly"]
        with pytest.raises(PermissionDeniedError):
            await a.pause_schedule("nightly")
        assert (await root.pause_schedule("nightly")).action == "pause"
        assert (await a.schedules()).schedules[0].paused
        assert isinstance(await a.groups(), list)


async def test_revoked_token_raises_authentication_error_naming_it(settings, served):
    revoked = await make_token(settings, "alice", Role.USER, "risk", revoked=True)
    async with AsyncJobQueueClient(http_settings(settings, served, revoked)) as remote:
        with pytest.raises(AuthenticationError) as e:
            await remote.jobs()
    assert e.value.reason == "revoked" and "revoked" in str(e.value)
    assert revoked not in str(e.value) and revoked not in repr(http_settings(settings, served, revoked))


def test_which_server(tmp_path):
    """The precedence of `jobqueue.connect`: an explicit API URL, then an explicit Redis URL, then what a local
    `jobqueue up` recorded (its API and token before its Redis), else NoServerError naming both settings."""
    home = tmp_path / "home"
    home.mkdir()
    with pytest.raises(NoServerError) as e:
        resolve_target(Settings(home=home))
    assert e.value.variables == ("JOBQUEUE_API_URL", "JOBQUEUE_REDIS_URL")
    (home / "redis.url").write_text("redis://127.0.0.1:1/0\n")
    assert not isinstance(resolve_target(Settings(home=home)), HttpTarget)
    (home / "api.url").write_text("http://127.0.0.1:2\n")
    (home / "api.token").write_text("jq_local\n")
    local = resolve_target(Settings(home=home))
    assert isinstance(local, HttpTarget) and local.url == "http://127.0.0.1:2" and local.local
    assert local.token is not None and local.token.get_secret_value() == "jq_local"
    assert not isinstance(resolve_target(Settings(home=home, redis_url="redis://elsewhere:6379/0")), HttpTarget)
    remote = resolve_target(Settings(home=home, redis_url="redis://x:1/0", api_url="https://jq.example.com/"))
    assert isinstance(remote, HttpTarget) and remote.url == "https://jq.example.com" and remote.token is None


async def test_wait_over_http_is_a_long_poll_answered_at_the_finish(settings, served):
    """wait() over HTTP holds one `GET /v1/jobs/{id}?wait=` open; the API answers it at the job's finish event."""
    import asyncio
    import time

    from tests.helpers import eventually
    from tests.integration.test_wait_events import waiting_clients

    token = await make_token(settings, "alice", Role.USER, "risk")
    remote_settings = http_settings(settings, served, token).model_copy(update={"wait_poll_seconds": 30.0})
    async with AsyncJobQueueClient(remote_settings) as remote, AsyncJobQueueClient(settings) as direct:
        job = await remote.offline_query({"user.id": [1, 2, 3]}, ["user.f0"], TIMES)
        waiter = asyncio.create_task(job.wait(show_progress=False))
        await eventually(lambda: waiting_clients(direct.redis, job.id), timeout=10,
                         what="the API holding wait()'s long poll on the job's finish channel")
        async with worker_running(settings):
            record = await asyncio.wait_for(waiter, 30)
            returned = time.time()
    assert record.status is JobStatus.SUCCEEDED and record.finished_at is not None
    assert returned - record.finished_at.timestamp() < 2.0  # the 30 s safety read played no part
