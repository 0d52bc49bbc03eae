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
from jobqueue.fair_share import FairShare
from jobqueue.keys import (
    JOB_JSON_FIELDS,
    SLOT,
    ActiveJobsField,
    CounterName,
    JobField,
    Keys,
    TeamCounterName,
    around,
)
from jobqueue.listing_index import relist_json, submit_listing
from jobqueue.logs import capped
from jobqueue.models import JobRecord, JobStatus, PerformanceSummary
from jobqueue.quotas import Quota
from jobqueue.shard_store import ShardedJobs, decode_record
from jobqueue.store_scripts import (
    CLAIM,
    FORGET_EMPTY_INDEX,
    INDEX_JOB,
    KILL_ID,
    NAMES,
    RECORD_OOM_KILL,
    RECORD_REPLACED,
    RECOUNT_ACTIVE,
    RELEASE_SHARD,
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
    team_running: int | None = None  # not claimed as its team runs its limit: how many of the team's jobs run


CLAIM_TEAM_AT_LIMIT = 2  # the CLAIM script's reply when the job's team runs its limit in the group


@dataclass(frozen=True)
class ActiveCount:
    """One <p>active-jobs count the quota recount suspects is too high, with the jobs a scan found unfinished for
    it (`JobStore.recount_active`)."""

    kind: ActiveJobsField
    name: str  # the owner or team
    candidates: frozenset[str]

    @property
    def field(self) -> str:
        return self.kind.field(self.name)


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


class JobStore(ShardedJobs):
    """The I/O for job records, and the only writer of job state: the record, its queue entry and arq job,
    the running entry and heartbeat, deadlines, the jobs index and listing indexes, OOM kills, the counters and the
    active-jobs counts of the quotas. Holds no state beyond its Redis client, key layout and clock."""

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
        self._recount_active = redis.register_script(RECOUNT_ACTIVE)
        self._index_job = redis.register_script(INDEX_JOB)
        self._forget_empty_index = redis.register_script(FORGET_EMPTY_INDEX)
        self._release_shard = redis.register_script(RELEASE_SHARD)

    async def create(self, record: JobRecord) -> None:
        """Write a record without enqueueing it (tests plant records for hand-made queue entries this way).
        Submissions go through `submit`, which writes the record and the queue entry together."""
        await self._create(record, None, b"", 0, (), None)

    async def submit(self, record: JobRecord, queue: str, arq_job: bytes, expires_ms: int,
                     exclusive: bool = False, quotas: Sequence[Quota] = (), fair: FairShare | None = None,
                     wake: tuple[str, str] | None = None) -> bool:
        """Create the record and put its arq job on `queue` in one script, so that no crash or lost connection can
        leave a record without a queue entry or a queue entry without a record.

        `quotas`: the queued-jobs quotas of the job's owner and team (`jobqueue.quotas`), checked in the same
        script: over one, `QuotaExceededError` and nothing is written; two submits racing for the last slot cannot
        both pass. The job counts against its owner and team (<p>active-jobs) until its final transition.

        `fair`: the job's fair-share score is computed in the same script (`jobqueue.fair_share`); None: FIFO, the
        score is the submit time. `wake`: (channel, message) published by the same script once the job is written
        (the submitted event that wakes the manager and the group's idle consumers: no round trip of its own).

        An id that already has a record returns False with `exclusive` (deterministic ids: scheduled
        runs are created once however many managers try); otherwise it raises `DuplicateJobId` and
        writes nothing."""
        return await self._create(record, queue, arq_job, expires_ms, quotas, fair, exclusive, wake)

    async def _create(self, record: JobRecord, queue: str | None, arq_job: bytes, expires_ms: int,
                      quotas: Sequence[Quota], fair: FairShare | None = None, exclusive: bool = False,
                      wake: tuple[str, str] | None = None) -> bool:
        keys, args, active = self._submit_call(record, queue, arq_job, expires_ms, quotas, fair=fair, wake=wake)
        reply = await self._submit(keys=keys, args=args)
        if int(reply[0]) == SUBMIT_CREATED:
            return True
        if int(reply[0]) == SUBMIT_OVER_QUOTA:
            field, current = active[int(reply[1]) - 1][0], int(reply[2])
            raise next(q for q in quotas if q.active_field == field).exceeded(current)
        if exclusive:
            return False
        raise DuplicateJobId(record.job_id)

    def _submit_call(self, record: JobRecord, queue: str | None, arq_job: bytes, expires_ms: int,
                     quotas: Sequence[Quota], score_ms: int | None = None,
                     fair: FairShare | None = None, wake: tuple[str, str] | None = None,
                     ) -> tuple[list[str], list[Any], list[list[Any]]]:
        """The KEYS and ARGV of `SUBMIT` for one record (and the active-jobs fields it counts); `score_ms`: its
        queue score (default: its submission time, or the fair-share score with `fair`); `wake`: (channel,
        message) the script publishes once the job is written (ARGV[14..15])."""
        job_id = record.job_id
        pairs = self._record_pairs(record)
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
        args = [json.dumps(pairs), self.ttl_seconds, job_id, repr(submitted_ms),
                repr(deadline.timestamp() * 1000) if deadline is not None else "", json.dumps(counted),
                json.dumps(active), self.keys.arq_id(job_id), arq_job, expires_ms,
                int(submitted_ms) if score_ms is None else score_ms, submit_listing(self.keys, record),
                fair.to_json(self.keys, record.resource_group) if fair is not None and score_ms is None else "",
                *(wake or ("", ""))]
        return keys, args, active

    def _record_pairs(self, record: JobRecord) -> list[str]:
        """The stored fields of a record, as field, value, ... (`status` plain, the rest JSON)."""
        pairs: list[str] = [JobField.STATUS.value, record.status.value]
        for name in JOB_JSON_FIELDS:
            pairs += [name, _encode(getattr(record, name))]
        return pairs

    async def active_jobs(self, quotas: Sequence[Quota]) -> list[int]:
        """The unfinished jobs each of these queued-jobs quotas counts now (`submit` checks them atomically)."""
        if not quotas:
            return []
        values = await cast(Awaitable[list[bytes | None]],
                            self.redis.hmget(self.keys.active_jobs, [q.active_field for q in quotas]))
        return [int(v) if v is not None else 0 for v in values]

    async def recount_active(self, suspects: Sequence[ActiveCount], recheck_from_ms: int) -> list[tuple[str, int, int]]:
        """Lower the <p>active-jobs counts of `suspects` to the unfinished jobs their live records show: each one's
        candidates (the jobs a scan found unfinished for it) and every job submitted since `recheck_from_ms` (which
        the scan may have missed) are checked again in one script, so that no submit or final transition comes
        between the check and the write. A count is never raised. Returns (field, before, after) of those lowered."""
        if not suspects:
            return []
        finals = ",".join(s.value for s in JobStatus if s.is_final)
        head, tail = around(self.keys.job(SLOT))
        wanted = json.dumps([[s.field, s.kind.value, s.name, sorted(s.candidates)] for s in suspects])
        reply = await self._recount_active(keys=[self.keys.active_jobs, self.keys.jobs_index],
                                           args=[NAMES, finals, head, tail, recheck_from_ms, wanted])
        return [(str(f), int(before), int(after)) for f, before, after in json.loads(reply)]

    async def get(self, job_id: str) -> JobRecord | None:
        """A job's record; a sharded query's parent as derived from its shards (`ShardedJobs.with_shards`)."""
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.keys.job(job_id)))
        record = decode_record(job_id, raw)
        if record is not None and record.shard_ids:
            return await self.with_shards(record)
        return record


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
            self.keys.job_changed(job_id), self._relist(), *pairs,
            JobField.ATTEMPT_ENDS.value, _encode(fields.get(JobField.FINISHED_AT) or self.clock()),
        ]
        keys = [self.keys.job(job_id), self.keys.deadlines, self.keys.counters, self.keys.active_jobs]
        if release:
            keys += [self.keys.running(release), self.keys.heartbeat(job_id)]
        return int(await self._transition(keys=keys, args=args))

    async def claim(self, job_id: str, consumer_id: str, group: str, heartbeat_ttl: float,
                    team_limits: str = "") -> Claim:
        """queued -> running for `consumer_id`: counts the attempt, sets the running entry and the
        heartbeat, and returns the attempt number and earlier errors, in one round trip. `team_limits`
        (`fair_share.limits_json`): not claimed when the job's team already runs its limit in the group."""
        reply = await self._claim(
            keys=[self.keys.job(job_id), self.keys.running(group), self.keys.heartbeat(job_id), self.keys.counters],
            args=[NAMES, JobStatus.QUEUED.value, JobStatus.RUNNING.value, consumer_id, _encode(consumer_id),
                  _encode(self.clock()), heartbeat_ms(heartbeat_ttl), job_id, json.dumps([count(CounterName.STARTED)]),
                  self.keys.job_changed(job_id), self._relist(), team_limits, *self.job_key_around],
        )
        if int(reply[0]) == CLAIM_TEAM_AT_LIMIT:
            return Claim(False, 0, [], None, team_running=int(reply[1]))
        if int(reply[0]) != 1:
            return Claim(False, 0, [], reply[1].decode() if len(reply) > 1 else None)
        return Claim(True, int(reply[1]), json.loads(reply[2]), JobStatus.RUNNING.value)

    @property
    def job_key_around(self) -> tuple[str, str]:
        """A job's key as the text before and after its id (for scripts that read other jobs' records)."""
        return self.keys.job(""), ""

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

    def _relist(self) -> str:
        return relist_json(self.keys, self.clock().timestamp() * 1000)

    async def index(self, record: JobRecord) -> bool:
        """Put a job that is already there into the listing indexes (idempotent: the manager's backfill of jobs
        written before them). Its state index is the one of its status when the script runs. False: no record."""
        return int(await self._index_job(keys=[self.keys.job(record.job_id)], args=self._index_args(record))) == 1

    def _index_args(self, record: JobRecord) -> list[Any]:
        return [NAMES, record.job_id, submit_listing(self.keys, record, with_state=False),
                json.dumps(self.keys.jobs_by_state()), repr(record.submitted_at.timestamp() * 1000)]

    async def forget_empty_index(self, index: str) -> bool:
        """Drop a per-value listing index from <p>listing-indexes once it is empty (the garbage collector)."""
        return int(await self._forget_empty_index(keys=[self.keys.listing_indexes, index])) == 1

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """The records of these jobs (None where there is none), in one round trip (and one more per sharded
        query's parent, derived from its shards as `get` does)."""
        if not job_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
            replies = await pipe.execute()
        records = [decode_record(job_id, raw) for job_id, raw in zip(job_ids, replies, strict=True)]
        return [await self.with_shards(r) if r is not None and r.shard_ids else r for r in records]

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
                      self.keys.job_changed(job_id), self._relist()],
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
