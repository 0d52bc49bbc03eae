"""Scheduled queries, fired by the manager (consumers scale to zero, so they cannot own cron).

Every tick, for each enabled schedule: read its checkpoint, ask `plan_firing` (pure) whether a
run is due, and submit it under the deterministic job id `scheduled:<env>:<name>:<due UTC>`.
The record and its queue entry are created in one transaction that writes nothing when the id
exists (`JobStore.submit(exclusive=True)`), so a restart, a failover or two managers racing submit a
due time once. Pause, resume and "run now" are flags in Redis that any CLI can set.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

from jobqueue.inputs import to_arrow, with_times
from jobqueue.keys import SCHEDULE_ERRORS_FIELD, TRUE, ScheduleField
from jobqueue.logs import get_logger
from jobqueue.models import JobStatus
from jobqueue.schedules import ScheduledQuery, spine_columns
from manager.schedule_policy import plan_firing

if TYPE_CHECKING:  # the manager loads the SDK only when it runs schedules (see runner.py)
    import pyarrow as pa

    from jobqueue.client import AsyncJobQueueClient

log = get_logger("jobqueue.manager.scheduler")


def run_id(environment: str, name: str, due: datetime, manual: bool = False) -> str:
    stamp = due.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"scheduled:{environment}:{name}:{'manual-' if manual else ''}{stamp}"


@dataclass(frozen=True)
class Fired:
    name: str
    due: datetime
    job_id: str | None  # None: not submitted (see reason)
    reason: str


def _dt(raw: bytes | None) -> datetime | None:
    return datetime.fromisoformat(raw.decode()) if raw else None


class Scheduler:
    def __init__(
        self,
        client: AsyncJobQueueClient,
        schedules: dict[str, ScheduledQuery],
        errors: list[str],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.keys = client.keys
        self.redis = client.redis
        self.schedules = schedules
        self.errors = errors
        self.clock = clock
        self.grace = timedelta(seconds=client.settings.schedule_grace_seconds)

    async def publish(self) -> None:
        """Definitions (and load errors) for `jobqueue schedules` on any machine."""
        mapping = {name: sq.model_dump_json() for name, sq in self.schedules.items()}
        mapping[SCHEDULE_ERRORS_FIELD] = json.dumps(self.errors)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.schedules)
            pipe.hset(self.keys.schedules, mapping=mapping)
            await pipe.execute()
        for error in self.errors:
            log.error("schedule not loaded", error=error)

    async def tick(self, now: datetime | None = None) -> list[Fired]:
        now = now or self.clock()
        fired = []
        for sq in self.schedules.values():
            try:
                fired += await self._evaluate(sq, now)
            except Exception:
                log.exception("schedule evaluation failed", schedule=sq.name)
        return fired

    async def _evaluate(self, sq: ScheduledQuery, now: datetime) -> list[Fired]:
        key = self.keys.schedule(sq.name)
        checkpoint, paused, requested = await cast(
            Awaitable[list[bytes | None]],
            self.redis.hmget(key, [ScheduleField.CHECKPOINT, ScheduleField.PAUSED, ScheduleField.RUN_REQUESTED]),
        )
        results = []
        if requested:
            await cast(Awaitable[int], self.redis.hdel(key, ScheduleField.RUN_REQUESTED))
            results.append(await self.fire(sq, now, manual=True))
        if not sq.enabled or paused == TRUE.encode():
            # paused time is not "missed"
            await cast(Awaitable[int], self.redis.hset(key, ScheduleField.CHECKPOINT, now.isoformat()))
            return results
        firing = plan_firing(sq, _dt(checkpoint), now, self.grace)
        await cast(Awaitable[int], self.redis.hset(key, ScheduleField.CHECKPOINT, now.isoformat()))
        if firing.missed:
            log.warning("schedule missed due times", schedule=sq.name, missed=firing.missed, reason=firing.reason)
        if firing.due is not None:
            results.append(await self.fire(sq, firing.due))
        return results

    async def fire(self, sq: ScheduledQuery, due: datetime, manual: bool = False) -> Fired:
        """Submit the run for `due` unless it exists already or overlaps a running one."""
        key = self.keys.schedule(sq.name)
        if not sq.allow_overlap:
            last = await cast(Awaitable[bytes | None], self.redis.hget(key, ScheduleField.LAST_JOB))
            record = await self.client.store.get(last.decode()) if last else None
            if record is not None and record.status in (JobStatus.QUEUED, JobStatus.RUNNING):
                reason = f"skipped {due.isoformat()}: previous run {record.job_id} is still {record.status.value}"
                await cast(Awaitable[int], self.redis.hset(key, ScheduleField.LAST_REASON, reason))
                log.info("scheduled run skipped (overlap)", schedule=sq.name, due=due.isoformat(), reason=reason)
                return Fired(sq.name, due, None, reason)
        job_id = run_id(self.client.settings.environment, sq.name, due, manual)
        table = await self._spine(sq, due)
        from jobqueue.client import PreparedSubmission  # the SDK is loaded already: self.client is one

        submitted = await self.client.submit_prepared(PreparedSubmission(
            table, spine_columns(sq, self.client.registry), sq.output, sq.resource_group, job_id, submitted_at=due,
            max_retries=sq.max_retries, deadline=due + sq.deadline if sq.deadline else None, exclusive=True,
            attribution=sq.attribution(job_id),
            registry_version=await self.client.registries.current_id(),  # checked at load; runs on the current
            enforce_quotas=False,  # an operator's schedule: its runs count against the quotas, never refused
        ))
        if not submitted:
            return Fired(sq.name, due, None, "already submitted (another manager, or before a restart)")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.schedule_runs(sq.name), {job_id: due.timestamp() * 1000})
            pipe.hset(key, mapping={ScheduleField.LAST_JOB: job_id, ScheduleField.LAST_DUE: due.isoformat(),
                                    ScheduleField.LAST_REASON: "manual run" if manual else "due"})
            await pipe.execute()
        log.info("scheduled run submitted", schedule=sq.name, due=due.isoformat(), job_id=job_id)
        return Fired(sq.name, due, job_id, "submitted")

    async def _spine(self, sq: ScheduledQuery, due: datetime) -> pa.Table:
        if sq.input is not None:
            table = to_arrow(sq.input)
        else:
            assert sq.input_path is not None
            table = self.client.storage.read_table(sq.input_path).select(spine_columns(sq, self.client.registry))
        return with_times(table, None, due)
