"""The listing indexes kept by `JobStore`'s scripts on a real Redis: after submit, claim, finish, requeue, cancel
(queued and running) and expiry each job is in exactly the indexes of what it is now; the garbage collector removes the
entries of expired records and forgets empty indexes; the manager's backfill indexes jobs written before the indexes
existed, and running it again changes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from jobqueue.jobstore import CancelOutcome, JobStore
from jobqueue.keys import Keys, ListingIndex, tag_value
from jobqueue.models import JobRecord, JobStatus
from jobqueue.redis import connect_redis
from manager.gc import GarbageCollector

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def redis(settings):
    client = connect_redis(settings)
    yield client
    await client.aclose()


@pytest.fixture
def keys(settings) -> Keys:
    return Keys.for_environment(settings.environment)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def record(job_id: str, owner: str = "alice", team: str | None = "risk", submitted: datetime = T0,
           status: JobStatus = JobStatus.QUEUED, **extra) -> JobRecord:
    return JobRecord(job_id=job_id, status=status, resource_group="default", output=["user.f0"], input_rows=1,
                     submitted_at=submitted, owner=owner, team=team, query_name="q.churn",
                     tags={"project": "churn"}, **extra)


async def submit(store: JobStore, rec: JobRecord) -> None:
    assert await store.submit(rec, store.keys.queue(rec.resource_group), b"{}", 60_000)


async def where(redis, keys: Keys, job_id: str) -> dict[str, float]:
    """Every listing index holding `job_id`, with its score there."""
    found = {}
    async for key in redis.scan_iter(match=f"{keys.prefix}jobs-by*", count=1000):
        score = await redis.zscore(key, job_id)
        if score is not None:
            found[key.decode()[len(keys.prefix):]] = score
    return found


def ms(moment: datetime) -> float:
    return moment.timestamp() * 1000


ATTRIBUTES = {"jobs-by:owner:alice", "jobs-by:team:risk", "jobs-by:group:default", "jobs-by:query:q.churn",
              "jobs-by:tag:project=churn"}


async def test_each_transition_moves_the_job_between_state_indexes_and_scores_wait_and_duration(redis, keys):
    clock = Clock()
    store = JobStore(redis, keys, 3600, clock)
    job = uuid.uuid4().hex
    await submit(store, record(job))
    at = await where(redis, keys, job)
    assert set(at) == ATTRIBUTES | {"jobs-by:state:queued"} and set(at.values()) == {ms(T0)}
    assert await redis.sismember(keys.listing_indexes, keys.jobs_by(ListingIndex.TAG, tag_value("project", "churn")))

    clock.now = T0 + timedelta(seconds=7)
    assert (await store.claim(job, "c1", "default", 30)).claimed
    at = await where(redis, keys, job)
    assert set(at) == ATTRIBUTES | {"jobs-by:state:running", "jobs-by-wait"} and at["jobs-by-wait"] == 7000

    clock.now = T0 + timedelta(seconds=9)  # requeued, claimed again: the wait stays that of the first start
    assert await store.requeue(job, ["lost"], owner="")
    assert set(await where(redis, keys, job)) == ATTRIBUTES | {"jobs-by:state:queued", "jobs-by-wait"}
    clock.now = T0 + timedelta(seconds=12)
    assert (await store.claim(job, "c2", "default", 30)).claimed
    clock.now = T0 + timedelta(seconds=20)
    assert await store.transition(job, [JobStatus.RUNNING], JobStatus.SUCCEEDED, owner="c2",
                                  finished_at=clock.now) == 1
    at = await where(redis, keys, job)
    assert set(at) == ATTRIBUTES | {"jobs-by:state:succeeded", "jobs-by-wait", "jobs-by-duration"}
    assert at["jobs-by-wait"] == 7000 and at["jobs-by-duration"] == 13000  # first start (7 s) to the finish (20 s)


async def test_cancel_queued_running_and_expiry_keep_the_state_indexes_exact(redis, keys):
    clock = Clock()
    store = JobStore(redis, keys, 3600, clock)
    queued, running, late = (uuid.uuid4().hex for _ in range(3))
    for job in (queued, running, late):
        await submit(store, record(job))
    assert await store.request_cancel(queued) is CancelOutcome.CANCELLED_QUEUED
    assert set(await where(redis, keys, queued)) == ATTRIBUTES | {"jobs-by:state:cancelled"}

    clock.now = T0 + timedelta(seconds=2)
    await store.claim(running, "c1", "default", 30)
    assert await store.request_cancel(running) is CancelOutcome.STOP_REQUESTED
    assert "jobs-by:state:running" in await where(redis, keys, running)  # still running until its consumer stops
    clock.now = T0 + timedelta(seconds=5)
    assert await store.mark_cancelled(running, owner="c1")
    at = await where(redis, keys, running)
    assert set(at) == ATTRIBUTES | {"jobs-by:state:cancelled", "jobs-by-wait", "jobs-by-duration"}
    assert at["jobs-by-duration"] == 3000

    assert await store.mark_expired(late, "past its deadline")
    assert set(await where(redis, keys, late)) == ATTRIBUTES | {"jobs-by:state:expired"}


async def test_the_garbage_collector_removes_entries_of_expired_records_and_forgets_empty_indexes(
        redis, keys, settings):
    store = JobStore(redis, keys, 3600)
    kept, gone = uuid.uuid4().hex, uuid.uuid4().hex
    await submit(store, record(kept))
    await submit(store, record(gone, owner="bob", team="ml"))
    await redis.delete(keys.job(gone))  # its record expired
    gc = GarbageCollector(redis, settings.model_copy(update={"gc_batch_size": 3}))
    for _ in range(10):  # small batches: several runs, each going on where the last stopped
        await gc.run_once()
    assert await where(redis, keys, gone) == {}
    assert set(await where(redis, keys, kept)) == ATTRIBUTES | {"jobs-by:state:queued"}
    listed = {k.decode() for k in await redis.smembers(keys.listing_indexes)}
    assert keys.jobs_by(ListingIndex.OWNER, "bob") not in listed and keys.jobs_by(ListingIndex.TEAM, "ml") not in listed
    assert keys.jobs_by(ListingIndex.OWNER, "alice") in listed


async def test_backfill_indexes_jobs_from_before_the_indexes_and_again_changes_nothing(redis, keys, settings):
    store = JobStore(redis, keys, 3600)
    old_queued, old_done = uuid.uuid4().hex, uuid.uuid4().hex
    for job in (old_queued, old_done):
        await submit(store, record(job))
    started, finished = T0 + timedelta(seconds=4), T0 + timedelta(seconds=10)
    await store.transition(old_done, [JobStatus.QUEUED], JobStatus.SUCCEEDED, started_at=started,
                           finished_at=finished)
    # as an older version left them: in <p>jobs only, with no listing index at all
    async for key in redis.scan_iter(match=f"{keys.prefix}jobs-by*", count=1000):
        await redis.delete(key)
    await redis.delete(keys.listing_indexes)
    gc = GarbageCollector(redis, settings)
    report = await gc.run_once(dry_run=True)
    assert sorted(report.removed["listing_backfill"]) == sorted([old_queued, old_done])
    assert await where(redis, keys, old_queued) == {}  # a dry run writes nothing
    report = await gc.run_once()
    assert sorted(report.removed["listing_backfill"]) == sorted([old_queued, old_done])
    assert set(await where(redis, keys, old_queued)) == ATTRIBUTES | {"jobs-by:state:queued"}
    done = await where(redis, keys, old_done)
    assert set(done) == ATTRIBUTES | {"jobs-by:state:succeeded", "jobs-by-wait", "jobs-by-duration"}
    assert (done["jobs-by-wait"], done["jobs-by-duration"]) == (4000, 6000)
    assert (await gc.run_once()).removed["listing_backfill"] == []
    assert (await gc.listing.backfill(whole=True)).changed == []


async def test_backfill_repairs_a_stale_state_entry(redis, keys, settings):
    """A job an older writer moved without the indexes: in the wrong state index; the backfill moves it."""
    store = JobStore(redis, keys, 3600)
    job = uuid.uuid4().hex
    await submit(store, record(job))
    await redis.hset(keys.job(job), "status", JobStatus.FAILED.value)  # an older writer's transition
    indexed = await GarbageCollector(redis, settings).listing.backfill(whole=True)
    assert indexed.changed == [job]
    at = await where(redis, keys, job)
    assert "jobs-by:state:failed" in at and "jobs-by:state:queued" not in at




async def test_every_index_holds_the_exact_submission_score_and_whole_ms_waits(redis, keys):
    """Scores as `<p>jobs` has them, to the microsecond (a Lua number would keep 14 digits), and waits and durations
    in whole ms: a cursor (`<score>_<id>`) holds them exactly."""
    odd = T0 + timedelta(microseconds=123_457)
    clock = Clock()
    store = JobStore(redis, keys, 3600, clock)
    job = uuid.uuid4().hex
    await submit(store, record(job, submitted=odd))
    clock.now = odd + timedelta(seconds=1, microseconds=333)
    await store.claim(job, "c1", "default", 30)
    clock.now = odd + timedelta(seconds=3, microseconds=777)
    await store.transition(job, [JobStatus.RUNNING], JobStatus.FAILED, owner="c1", finished_at=clock.now)
    exact = await redis.zscore(keys.jobs_index, job)
    at = await where(redis, keys, job)
    assert exact == ms(odd) and {at[k] for k in ATTRIBUTES | {"jobs-by:state:failed"}} == {exact}
    assert (at["jobs-by-wait"], at["jobs-by-duration"]) == (1000, 2001)  # 1000.333 and 3000.777 - 1000
