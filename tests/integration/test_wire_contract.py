"""The wire contract on a real Redis: every counter the store writes is exported, a group whose reconcile fails still
publishes its (named) state, and one fake clock drives the reconciler, its reaper, its scheduler and the records."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from jobqueue import AsyncJobQueueClient, JobStatus, ResourceRequests
from jobqueue.groups import load_groups, load_groups_config
from jobqueue.jobstore import JobStore
from jobqueue.keys import (
    MANAGER_TICK_AT,
    CounterField,
    CounterName,
    GroupState,
    HistogramField,
    HistogramName,
    Keys,
    ScheduleField,
    parse_counter_field,
)
from jobqueue.models import JobRecord, PerformanceSummary
from jobqueue.redis import connect_redis
from jobqueue.registry import load_registry
from jobqueue.schedules import parse_schedules
from manager.backends.local import LocalBackend
from manager.metrics import HISTOGRAM_METRICS, RedisCounters
from manager.reconcile import Reconciler
from manager.scheduler import Scheduler
from tests.helpers import eventually, with_groups

GROUP = "g"


def _record(job_id: str, **extra) -> JobRecord:
    return JobRecord(job_id=job_id, status=JobStatus.QUEUED, resource_group=GROUP, output=["user.f0"], input_rows=1,
                     submitted_at=datetime.now(UTC), **extra)


def _summary() -> PerformanceSummary:
    return PerformanceSummary(
        consumer_id="c1", spill_enabled=True, spilled_bytes=3 << 20, memory_limit_bytes=1 << 30, peak_memory_bytes=1,
        threads=1, rows_in=1, rows_out=1, queue_wait_seconds=0.25, execution_seconds=1.5, total_seconds=2.0,
        scan_cache_enabled=True, scan_cache_hits=5, scan_cache_misses=6, bytes_from_cache=2002, bytes_from_remote=3003,
        scan_cache_evictions=4,
    )


async def test_every_counter_the_store_can_write_is_exported_by_the_metrics(settings):
    keys = Keys.for_environment(settings.environment)
    redis = connect_redis(settings)
    try:
        store = JobStore(redis, keys, 3600)
        for job_id in ("ok", "bad", "ran", "queued", "late"):
            await store.create(_record(job_id))  # enqueued
        assert (await store.claim("ok", "c1", GROUP, 30)).claimed  # started
        assert await store.requeue("ok", ["attempt 1: lost"], owner="c1", release=GROUP)  # retried
        assert (await store.claim("ok", "c1", GROUP, 30)).claimed
        assert await store.mark_succeeded("ok", "file:///r", _summary(), owner="c1", release=GROUP)  # + the summary's
        assert await store.mark_failed("bad", "no")  # failed
        assert (await store.claim("ran", "c1", GROUP, 30)).claimed
        assert await store.mark_failed("ran", "no", owner="c1", release=GROUP, run_seconds=7.0)  # its run time
        assert await store.request_cancel("queued") == 1  # cancelled
        assert await store.mark_expired("late", "too late")  # expired
        assert await store.record_oom_kill("c1", GROUP, {"kill_id": "k1", "limit": "1GiB", "at": 0.0})  # oom_kills
        snapshot = {k.decode(): float(v) for k, v in (await redis.hgetall(keys.counters)).items()}
    finally:
        await redis.aclose()

    parsed = {field: parse_counter_field(field) for field in snapshot}
    assert [f for f, p in parsed.items() if p is None] == [], "a field no one declared"
    counters = {p.counter: snapshot[f] for f, p in parsed.items() if isinstance(p, CounterField)}
    assert set(counters) == set(CounterName), "the drive above writes every counter"
    assert {p.histogram for p in parsed.values() if isinstance(p, HistogramField)} == set(HistogramName)

    exported = RedisCounters()
    exported.snapshot = snapshot
    families = list(exported.collect())
    samples = sorted(s.value for f in families if isinstance(f, CounterMetricFamily) for s in f.samples
                     if s.labels.get("group") == GROUP)
    assert samples == sorted(counters.values()), "every counter is exported once, with its value"
    histograms = {f.name: f for f in families if isinstance(f, HistogramMetricFamily)}
    expected = {HistogramName.JOB_QUEUE_WAIT_SECONDS: 0.25, HistogramName.JOB_RUN_SECONDS: 2.0,
                HistogramName.JOB_FAILED_RUN_SECONDS: 7.0, HistogramName.JOB_SPILLED_BYTES: float(3 << 20)}
    assert set(expected) == set(HistogramName)
    for hist, value in expected.items():
        name, _, extra = HISTOGRAM_METRICS[hist]
        family = histograms[name]
        by_name = {(s.name, s.labels.get("le")): s.value for s in family.samples if s.labels["group"] == GROUP
                   and (extra is None or s.labels[extra[0]] == extra[1])}
        assert by_name[(f"{name}_sum", None)] == value
        assert by_name[(f"{name}_count", None)] == 1
        assert all(by_name[(f"{name}_bucket", str(float(le)))] == (1 if value <= le else 0) for le in hist.buckets)


class TroubledBackend(LocalBackend):
    """The local backend, but reading one group's start trouble fails (a failure outside the backend's calls)."""

    def start_trouble(self, group: str) -> str | None:
        if group == "broken":
            raise RuntimeError("start trouble unreadable")
        return super().start_trouble(group)


async def test_a_group_whose_reconcile_fails_still_publishes_its_state(settings, tmp_path, arq_redis):
    settings = with_groups(settings, tmp_path, {"broken": {"max_instances": 0}, "fine": {"max_instances": 0}})
    backend = TroubledBackend(settings)
    try:
        reconciler = Reconciler(arq_redis, settings, load_groups(settings.resource_groups_path), backend)
        await reconciler.tick()
        raw = await arq_redis.hgetall(reconciler.keys.group_states)
    finally:
        await backend.aclose()
    states = {k.decode(): GroupState.from_json(v) for k, v in raw.items()}
    assert states["broken"].reason == "error" and "start trouble unreadable" in (states["broken"].error or "")
    assert states["broken"].start_trouble is None and states["broken"].configured
    assert states["fine"] == GroupState(reason="steady", detail=states["fine"].detail)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_one_fake_clock_drives_the_reconciler_the_reaper_and_the_scheduler(settings, tmp_path, store,
                                                                                 arq_redis):
    settings = with_groups(settings, tmp_path, {"paused": {"max_instances": 0}})
    clock = FakeClock(datetime(2030, 1, 1, 10, 0, 30, tzinfo=UTC))
    deadline = datetime(2030, 1, 1, 11, 0, tzinfo=UTC)
    groups = load_groups_config(settings.resource_groups_path)
    backend = LocalBackend(settings)
    stop = asyncio.Event()
    async with AsyncJobQueueClient(settings) as client:
        schedules, errors = parse_schedules(
            {"schedules": [{"name": "hourly", "schedule": "0 * * * *", "output": ["user.f0"],
                            "input": {"user.id": [1]}, "resource_group": "paused"}]},
            load_registry(store.registry_path), groups.groups)
        assert not errors
        reconciler = Reconciler(arq_redis, settings, groups, backend, clock=clock,
                                scheduler=Scheduler(client, schedules, errors))
        keys, schedule = client.keys, client.keys.schedule("hourly")
        job = await client.offline_query({"user.id": [1]}, ["user.f0"], completion_deadline=deadline,
                                         resources=ResourceRequests(resource_group="paused"))

        async def ticked_at(at: datetime) -> bool:
            tick_at = await arq_redis.hget(keys.manager_state, MANAGER_TICK_AT)
            return tick_at is not None and float(tick_at) == at.timestamp()

        loop = asyncio.create_task(reconciler.run(stop))
        try:
            await eventually(lambda: ticked_at(clock.now), what="a tick at the fake time")
            await eventually(lambda: ticked_at(clock.now), what="another one, after the schedule was armed")
            assert (await client.get_job(job.id)).status is JobStatus.QUEUED  # its deadline is still ahead
            checkpoint = await arq_redis.hget(schedule, ScheduleField.CHECKPOINT)
            assert checkpoint == clock.now.isoformat().encode()  # armed at the fake time, nothing fired
            assert await arq_redis.zcard(keys.schedule_runs("hourly")) == 0

            clock.now = datetime(2030, 1, 1, 11, 0, 10, tzinfo=UTC)  # past the deadline and the 11:00 due time
            await eventually(lambda: ticked_at(clock.now), what="a tick at the new fake time")
            record = await eventually(lambda: _final(client, job.id), what="the job expired by the fake clock")
        finally:
            stop.set()
            await asyncio.wait_for(loop, 30)
            await backend.aclose()
        assert record.status is JobStatus.EXPIRED and record.finished_at == clock.now
        runs = [r.decode() for r in await arq_redis.zrange(keys.schedule_runs("hourly"), 0, -1)]
        assert runs == [f"scheduled:{settings.environment}:hourly:20300101T110000Z"]


async def _final(client: AsyncJobQueueClient, job_id: str) -> JobRecord | None:
    record = await client.get_job(job_id)
    return record if record.status.is_final else None
