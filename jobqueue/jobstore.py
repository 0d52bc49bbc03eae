"""Job records in Redis: create, read, and move between states atomically.

A record is the hash `<prefix>job:<id>`. `status` is a plain field so that a transition can be
checked and applied in one Lua call: the SDK's cancel, a consumer's claim and the manager's
reaper race safely, and exactly one of them wins. `attempts` is a plain integer (HINCRBY);
every other field holds JSON.

    queued ──claim──▶ running ──▶ succeeded | failed | cancelled | expired
      ▲                  │
      └──requeue─────────┘  (retryable failure, lost consumer, hard shutdown)
    queued ──▶ cancelled | expired
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis

from jobqueue.clock import Clock, system_clock
from jobqueue.errors import JobStateError
from jobqueue.keys import JOB_JSON_FIELDS, ActiveJobsField, CounterName, JobField, Keys, TeamCounterName
from jobqueue.logs import capped
from jobqueue.models import JobRecord, JobStatus, PerformanceSummary
from jobqueue.quotas import Quota
from jobqueue.store_scripts import (
    CLAIM,
    KILL_ID,
    NAMES,
    RECORD_OOM_KILL,
    RECORD_REPLACED,
    REQUEST_CANCEL,
    SUBMIT,
    SUBMIT_CREATED,
    SUBMIT_OVER_QUOTA,
    TRANSITION,
    Count,
    count,
    failed_run_counts,
    summary_counts,
    transition_counts,
)


class DuplicateJobId(JobStateError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job id {job_id} already exists; nothing was submitted")


OOM_KILL_TTL_SECONDS = 3600  # long past the heartbeat TTL after which the reaper takes the jobs of the killed

QUEUED, RUNNING = [JobStatus.QUEUED], [JobStatus.RUNNING]


@dataclass(frozen=True)
class Claim:
    claimed: bool
    attempt: int
    errors: list[str]  # earlier attempts' errors
    status: str | None  # the status found (when not claimed)


class CancelOutcome(enum.IntEnum):
    """What a cancel request did (the reply of `store_scripts.REQUEST_CANCEL`)."""

    NO_JOB = -1
    ALREADY_FINAL = 0  # finished, or cancelled before: nothing changed
    CANCELLED_QUEUED = 1  # it was queued: cancelled now
    STOP_REQUESTED = 2  # it is running: its consumer is asked to stop it


def heartbeat_ms(ttl_seconds: float) -> int:
    """A heartbeat TTL in whole milliseconds (PX), so a fractional setting is kept, not truncated."""
    return max(1, round(ttl_seconds * 1000))


def _encode(value: Any) -> str:
    if isinstance(value, datetime):
        return json.dumps(value.isoformat())
    if isinstance(value, PerformanceSummary):
        return value.model_dump_json()
    return json.dumps(value)


class JobStore:
    """The I/O for job records, and the only writer of job state: the record, its queue entry and arq job,
    the running entry and heartbeat, deadlines, the jobs index, OOM kills, the counters and the active-jobs counts of
    the quotas. Holds no state beyond its Redis client, key layout and clock."""

    def __init__(self, redis: Redis, keys: Keys, ttl_seconds: int, clock: Clock = system_clock) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._transition = redis.register_script(TRANSITION)
        self._claim = redis.register_script(CLAIM)
        self._request_cancel = redis.register_script(REQUEST_CANCEL)
        self._record_oom_kill = redis.register_script(RECORD_OOM_KILL)
        self._submit = redis.register_script(SUBMIT)

    async def create(self, record: JobRecord) -> None:
        """Write a record without enqueueing it (tests plant records for hand-made queue entries this way).
        Submissions go through `submit`, which writes the record and the queue entry together."""
        await self._create(record, None, b"", 0, ())

    async def submit(self, record: JobRecord, queue: str, arq_job: bytes, expires_ms: int,
                     exclusive: bool = False, quotas: Sequence[Quota] = (),
                     wake: tuple[str, str] | None = None) -> bool:
        """Create the record and put its arq job on `queue` in one script, so that no crash or lost connection can
        leave a record without a queue entry or a queue entry without a record.

        `quotas`: the queued-jobs quotas of the job's owner and team (`jobqueue.quotas`), checked in the same
        script: over one, `QuotaExceededError` and nothing is written; two submits racing for the last slot cannot
        both pass. The job counts against its owner and team (<p>active-jobs) until its final transition.

        `wake`: (channel, message) published by the same script once the job is written (the submitted event that
        wakes the manager and the group's idle consumers: no round trip of its own).

        An id that already has a record returns False with `exclusive` (deterministic ids: scheduled
        runs are created once however many managers try); otherwise it raises `DuplicateJobId` and
        writes nothing."""
        return await self._create(record, queue, arq_job, expires_ms, quotas, exclusive, wake)

    async def _create(self, record: JobRecord, queue: str | None, arq_job: bytes, expires_ms: int,
                      quotas: Sequence[Quota], exclusive: bool = False, wake: tuple[str, str] | None = None) -> bool:
        job_id = record.job_id
        pairs: list[str] = [JobField.STATUS.value, record.status.value]
        for name in JOB_JSON_FIELDS:
            pairs += [name, _encode(getattr(record, name))]
        counted = [CounterName.ENQUEUED.field(record.resource_group)]
        if record.team:
            counted.append(TeamCounterName.SUBMITTED.field(record.team))
        limits = {q.active_field: q.limit for q in quotas}
        active = [] if record.status.is_final else [
            [field, limits.get(field, 0)] for field in (
                ActiveJobsField.OWNER.field(record.owner) if record.owner else None,
                ActiveJobsField.TEAM.field(record.team) if record.team else None) if field is not None]
        deadline = record.completion_deadline
        keys = [self.keys.job(job_id), self.keys.arq_job(job_id), self.keys.arq_result(job_id), self.keys.jobs_index,
                self.keys.counters, self.keys.deadlines, self.keys.active_jobs, *([queue] if queue else [])]
        submitted_ms = record.submitted_at.timestamp() * 1000
        reply = await self._submit(keys=keys, args=[
            json.dumps(pairs), self.ttl_seconds, job_id, repr(submitted_ms),
            repr(deadline.timestamp() * 1000) if deadline is not None else "", json.dumps(counted), json.dumps(active),
            self.keys.arq_id(job_id), arq_job, expires_ms, int(submitted_ms), "", "", *(wake or ("", ""))])
        if int(reply[0]) == SUBMIT_CREATED:
            return True
        if int(reply[0]) == SUBMIT_OVER_QUOTA:
            field, current = active[int(reply[1]) - 1][0], int(reply[2])
            raise next(q for q in quotas if q.active_field == field).exceeded(current)
        if exclusive:
            return False
        raise DuplicateJobId(job_id)

    async def active_jobs(self, quotas: Sequence[Quota]) -> list[int]:
        """The unfinished jobs each of these queued-jobs quotas counts now (`submit` checks them atomically)."""
        if not quotas:
            return []
        values = await cast(Awaitable[list[bytes | None]],
                            self.redis.hmget(self.keys.active_jobs, [q.active_field for q in quotas]))
        return [int(v) if v is not None else 0 for v in values]

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.keys.job(job_id)))
        if not raw:
            return None
        data = {k.decode(): v.decode() for k, v in raw.items()}
        values: dict[str, Any] = {"job_id": job_id, "status": data.pop(JobField.STATUS)}
        for name, text in data.items():
            if name in JOB_JSON_FIELDS:
                values[name] = json.loads(text)
        return JobRecord.model_validate(values)

    async def transition(
        self,
        job_id: str,
        allowed: Iterable[JobStatus],
        new: JobStatus,
        *,
        owner: str = "",
        release: str = "",
        extra_counts: list[Count] | None = None,
        **fields: Any,
    ) -> int:
        """Set `status=new` (and `fields`) only if the status is in `allowed` (and, with `owner`,
        the job belongs to that consumer). With `release=<group>` the job's running entry and
        heartbeat go in the same round trip. A final `new` is published on the job's finished channel by the same
        script (`wait()` blocks on it), and every new state on its changed channel (the console's live page); leaving
        a claimed attempt appends the time to `attempt_ends`. Returns 1 applied, 0 not applied, -1 no record."""
        counts = [*transition_counts(new), *(extra_counts or [])]
        pairs: list[str] = []
        for name, value in fields.items():
            if name not in JOB_JSON_FIELDS or name in (JobField.ATTEMPT_STARTS, JobField.ATTEMPT_ENDS):
                raise ValueError(f"unknown job field {name!r}")
            if name == JobField.ERROR and isinstance(value, str):
                value = capped(value)
            elif name == JobField.ERRORS:
                value = [capped(e) for e in value]
            elif name == JobField.SUMMARY and isinstance(value, PerformanceSummary):
                counts += summary_counts(value)
            pairs += [name, _encode(value)]
        args: list[str] = [
            NAMES, ",".join(s.value for s in allowed), new.value, job_id, _encode(owner) if owner else "",
            "1" if new.is_final else "0", json.dumps(counts), self.keys.job_finished(job_id),
            self.keys.job_changed(job_id), "", *pairs,
            JobField.ATTEMPT_ENDS.value, _encode(fields.get(JobField.FINISHED_AT) or self.clock()),
        ]
        keys = [self.keys.job(job_id), self.keys.deadlines, self.keys.counters, self.keys.active_jobs]
        if release:
            keys += [self.keys.running(release), self.keys.heartbeat(job_id)]
        return int(await self._transition(keys=keys, args=args))

    async def claim(self, job_id: str, consumer_id: str, group: str, heartbeat_ttl: float) -> Claim:
        """queued -> running for `consumer_id`: counts the attempt, sets the running entry and the
        heartbeat, and returns the attempt number and earlier errors, in one round trip."""
        reply = await self._claim(
            keys=[self.keys.job(job_id), self.keys.running(group), self.keys.heartbeat(job_id), self.keys.counters],
            args=[NAMES, JobStatus.QUEUED.value, JobStatus.RUNNING.value, consumer_id, _encode(consumer_id),
                  _encode(self.clock()), heartbeat_ms(heartbeat_ttl), job_id, json.dumps([count(CounterName.STARTED)]),
                  self.keys.job_changed(job_id), ""],
        )
        if int(reply[0]) != 1:
            return Claim(False, 0, [], reply[1].decode() if len(reply) > 1 else None)
        return Claim(True, int(reply[1]), json.loads(reply[2]), JobStatus.RUNNING.value)

    async def renew(self, job_id: str, consumer_id: str, heartbeat_ttl: float, progress: float) -> bool:
        """The running consumer's heartbeat: renew the job's heartbeat key, publish its progress, and return
        whether a cancel was requested. One round trip."""
        key = self.keys.job(job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.heartbeat(job_id), consumer_id, px=heartbeat_ms(heartbeat_ttl))
            pipe.hset(key, JobField.PROGRESS, str(round(progress, 4)))
            pipe.hget(key, JobField.CANCEL_REQUESTED)
            _, _, cancel = await pipe.execute()
        return bool(cancel == b"true")

    async def release(self, job_id: str, group: str) -> None:
        """Drop the job's running entry and heartbeat (a consumer's fallback: its final transition does it)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.running(group), job_id)
            pipe.delete(self.keys.heartbeat(job_id))
            await pipe.execute()

    async def release_lost(self, job_id: str, group: str, dequeue: bool) -> None:
        """The reaper's clean-up of a lost consumer's job: its running entry goes, and arq's in-progress lock, so
        any consumer of the group can take it again; with `dequeue` (the job is over) its queue entry and arq job
        go too. One transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.running(group), job_id)
            pipe.delete(self.keys.arq_in_progress(job_id))
            if dequeue:
                pipe.zrem(self.keys.queue(group), self.keys.arq_id(job_id))
                pipe.delete(self.keys.arq_job(job_id))
            await pipe.execute()

    async def dequeue(self, job_id: str, group: str) -> None:
        """Take a job that is over off its queue, with its arq job. One transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.queue(group), self.keys.arq_id(job_id))
            pipe.delete(self.keys.arq_job(job_id))
            await pipe.execute()

    async def remove_entry(self, group: str, member: str) -> None:
        """Remove a queue member, whoever's it is, with the lock of its take; with this environment's arq keys
        when it is a job of this environment (`jobqueue.entries.reject`). One transaction."""
        job_id = self.keys.job_id_of(member)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.queue(group), member)
            pipe.delete(self.keys.arq_in_progress_of(member))
            if job_id is not None:
                pipe.delete(self.keys.arq_job(job_id), self.keys.arq_retry(job_id))
            await pipe.execute()

    async def forget_deadline(self, job_id: str) -> None:
        await self.redis.zrem(self.keys.deadlines, job_id)

    async def prune_index(self, index: str, job_ids: Iterable[str]) -> None:
        """Remove job ids from an index zset (`jobs`, `deadlines`, `schedule-runs:<name>`) once their records are
        gone (the garbage collector)."""
        ids = list(job_ids)
        if ids:
            await self.redis.zrem(index, *ids)

    async def requeue(
        self, job_id: str, errors: list[str], owner: str = "", release: str = "", attempts: int | None = None
    ) -> bool:
        """running -> queued, keeping the attempt history; `owner` guards against a stale consumer.
        `attempts` resets the count (a run cut off by a shutdown does not use up a retry)."""
        fields: dict[str, Any] = {JobField.ERRORS: errors, JobField.PROGRESS: 0.0}
        if attempts is not None:
            fields[JobField.ATTEMPTS] = attempts
        applied = await self.transition(job_id, RUNNING, JobStatus.QUEUED, owner=owner, release=release, **fields)
        return applied == 1

    async def mark_succeeded(
        self, job_id: str, result_uri: str, summary: PerformanceSummary, owner: str = "", release: str = ""
    ) -> bool:
        applied = await self.transition(
            job_id, RUNNING, JobStatus.SUCCEEDED, owner=owner, release=release,
            finished_at=self.clock(), result_uri=result_uri, summary=summary, progress=1.0,
        )
        return applied == 1

    async def mark_failed(
        self, job_id: str, error: str, errors: list[str] | None = None, owner: str = "", release: str = "",
        run_seconds: float | None = None,
    ) -> bool:
        """`run_seconds`: how long the failed attempt ran, for the run-time histogram (None: it did not run)."""
        applied = await self.transition(
            job_id, [JobStatus.QUEUED, JobStatus.RUNNING], JobStatus.FAILED, owner=owner, release=release,
            extra_counts=failed_run_counts(run_seconds) if run_seconds is not None else None,
            finished_at=self.clock(), error=error, errors=errors if errors is not None else [error],
        )
        return applied == 1

    async def mark_cancelled(self, job_id: str, owner: str = "", release: str = "") -> bool:
        applied = await self.transition(
            job_id, [JobStatus.QUEUED, JobStatus.RUNNING], JobStatus.CANCELLED, owner=owner, release=release,
            finished_at=self.clock(),
        )
        return applied == 1

    async def mark_expired(self, job_id: str, error: str, owner: str = "", release: str = "") -> bool:
        applied = await self.transition(
            job_id, [JobStatus.QUEUED, JobStatus.RUNNING], JobStatus.EXPIRED, owner=owner, release=release,
            finished_at=self.clock(), error=error,
        )
        return applied == 1

    async def request_cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a queued job now (off its queue and deadlines, its arq job gone, in one script), or ask the
        running consumer to stop it."""
        key, counts = self.keys.job(job_id), json.dumps(transition_counts(JobStatus.CANCELLED))
        while True:
            stored = await cast(Awaitable[bytes | None], self.redis.hget(key, JobField.RESOURCE_GROUP)) or b'""'
            group = json.loads(stored)
            reply = int(await self._request_cancel(
                keys=[key, self.keys.counters, self.keys.deadlines, self.keys.queue(group), self.keys.arq_job(job_id),
                      self.keys.active_jobs],
                args=[NAMES, _encode(self.clock()), job_id, self.keys.arq_id(job_id), stored, JobStatus.QUEUED.value,
                      JobStatus.RUNNING.value, JobStatus.CANCELLED.value, counts, self.keys.job_finished(job_id),
                      self.keys.job_changed(job_id), ""],
            ))
            if reply != RECORD_REPLACED:
                return CancelOutcome(reply)

    async def record_oom_kill(self, consumer_id: str, group: str, kill: dict[str, Any]) -> bool:
        """Remember that the kernel OOM-killed `consumer_id` (`kill` has `kill_id`, `limit`, `at`) and count it
        once per kill id, however often it is reported. True when it was new."""
        reply = await self._record_oom_kill(keys=[self.keys.oom_kill(consumer_id), self.keys.counters],
                                            args=[json.dumps(kill), kill[KILL_ID], CounterName.OOM_KILLS.field(group),
                                                  OOM_KILL_TTL_SECONDS * 1000, KILL_ID])
        return int(reply) == 1

    async def oom_kills(self, consumer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The last recorded OOM kill of each of these consumers that has one."""
        ids = list(consumer_ids)
        if not ids:
            return {}
        values = await self.redis.mget([self.keys.oom_kill(c) for c in ids])
        return {c: json.loads(v) for c, v in zip(ids, values, strict=True) if v is not None}

    async def due_deadlines(self, now: datetime, limit: int = 1000) -> list[str]:
        ids = await self.redis.zrangebyscore(self.keys.deadlines, "-inf", now.timestamp() * 1000, 0, limit)
        return [i.decode() for i in ids]

    async def recent(self, limit: int = 50) -> list[str]:
        ids = await self.redis.zrevrange(self.keys.jobs_index, 0, limit - 1)
        return [i.decode() for i in ids]
