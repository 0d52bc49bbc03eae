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
from typing import Any, cast

from redis.asyncio import Redis

from jobqueue.clock import Clock, system_clock
from jobqueue.index_store import IndexedJobs
from jobqueue.keys import (
    JOB_JSON_FIELDS,
    CounterName,
    JobField,
    Keys,
)
from jobqueue.listing_index import relist_json
from jobqueue.logs import capped
from jobqueue.models import JobRecord, JobStatus, PerformanceSummary
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
    TRANSITION,
    Count,
    count,
    failed_run_counts,
    summary_counts,
    transition_counts,
)
from jobqueue.submit_store import SubmittedJobs, encode_field

# A queue entry is stale when its job is over (the record `job_key` has a status in `finals`, comma-separated) and no
# take holds it (no lock at `lock_key`): the one rule of `JobStore.drop_stale_entry` and `manager.observe`.
STALE_ENTRY_LUA = """
local function is_stale_entry(job_key, lock_key, status_field, finals)
  local status = redis.call('HGET', job_key, status_field)
  return status ~= false and string.find(',' .. finals .. ',', ',' .. status .. ',', 1, true) ~= nil
         and redis.call('EXISTS', lock_key) == 0
end
"""
# KEYS: the queue, the job's record, the take's lock, arq's job and retry keys; ARGV[1] the member, ARGV[2] the status
# field, ARGV[3] the final statuses, comma-separated. 1 when the entry was dropped.
DROP_STALE_ENTRY = STALE_ENTRY_LUA + """
if not is_stale_entry(KEYS[2], KEYS[3], ARGV[2], ARGV[3]) then return 0 end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[4], KEYS[5])
return 1
"""
FINAL_STATUSES = ",".join(s.value for s in JobStatus if s.is_final)

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


class CancelOutcome(enum.IntEnum):
    """What a cancel request did (the reply of `store_scripts.REQUEST_CANCEL`)."""

    NO_JOB = -1
    ALREADY_FINAL = 0  # finished, or cancelled before: nothing changed
    CANCELLED_QUEUED = 1  # it was queued: cancelled now
    STOP_REQUESTED = 2  # it is running: its consumer is asked to stop it


def heartbeat_ms(ttl_seconds: float) -> int:
    """A heartbeat TTL in whole milliseconds (PX), so a fractional setting is kept, not truncated."""
    return max(1, round(ttl_seconds * 1000))


LOCK_LEASE_HEARTBEATS = 3  # arq's in-progress lock of a take lives this many heartbeat TTLs unless renewed


def lock_lease_ms(heartbeat_ttl: float) -> int:
    """How long a take's lock (arq's in-progress key) lives unless the heartbeat renews it. A consumer killed
    between its take and its claim (which the reaper cannot see), or after recording the job's end but before arq
    took the entry off its queue, leaves a lock that only this lease ends: then any consumer takes the entry again
    (and runs the job, or drops the entry of one that is over). Longer than the heartbeat, so that the reaper hands
    back a claimed job of a lost consumer first."""
    return heartbeat_ms(heartbeat_ttl * LOCK_LEASE_HEARTBEATS)


class JobStore(SubmittedJobs, IndexedJobs, ShardedJobs):
    """The I/O for job records, and the only writer of job state: the record, its queue entry and arq job,
    the running entry and heartbeat, deadlines, the jobs index and listing indexes, OOM kills, the counters and the
    active-jobs counts of the quotas. Holds no state beyond its Redis client, key layout and clock.

    Its halves, one concept each, mixed in: submitting (`jobqueue.submit_store`), the indexes
    (`jobqueue.index_store`) and sharded queries (`jobqueue.shard_store`); this module moves jobs between states."""

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
        self._drop_stale_entry = redis.register_script(DROP_STALE_ENTRY)

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
            pairs += [name, encode_field(value)]
        args: list[str] = [
            NAMES, ",".join(s.value for s in allowed), new.value, job_id, encode_field(owner) if owner else "",
            "1" if new.is_final else "0", json.dumps(counts), self.keys.job_finished(job_id),
            self.keys.job_changed(job_id), self._relist(), *pairs,
            JobField.ATTEMPT_ENDS.value, encode_field(fields.get(JobField.FINISHED_AT) or self.clock()),
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
            args=[NAMES, JobStatus.QUEUED.value, JobStatus.RUNNING.value, consumer_id, encode_field(consumer_id),
                  encode_field(self.clock()), heartbeat_ms(heartbeat_ttl), job_id,
                  json.dumps([count(CounterName.STARTED)]), self.keys.job_changed(job_id), self._relist(), team_limits,
                  *self.job_key_around],
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
        """The running consumer's heartbeat: renew the job's heartbeat key and its take's lock (`lock_lease_ms`),
        publish its progress, and return whether a cancel was requested. One round trip."""
        key = self.keys.job(job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.heartbeat(job_id), consumer_id, px=heartbeat_ms(heartbeat_ttl))
            pipe.set(self.keys.arq_in_progress(job_id), b"1", px=lock_lease_ms(heartbeat_ttl))
            pipe.hset(key, JobField.PROGRESS, str(round(progress, 4)))
            pipe.hget(key, JobField.CANCEL_REQUESTED)
            _, _, _, cancel = await pipe.execute()
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

    async def drop_stale_entry(self, group: str, job_id: str) -> bool:
        """Take the queue entry of a job that is over (its record final) off its queue, with its arq keys, unless a
        consumer holds its take. Such an entry is left by a consumer lost between the job's last transition and
        arq's removal of the entry; a consumer's take drops it too, but only a consumer started for it. Atomic
        with the take (which needs the entry and sets the lock): True when it was dropped."""
        member = self.keys.arq_id(job_id)
        keys = [self.keys.queue(group), self.keys.job(job_id), self.keys.arq_in_progress_of(member),
                self.keys.arq_job(job_id), self.keys.arq_retry(job_id)]
        return bool(await self._drop_stale_entry(keys=keys, args=[member, JobField.STATUS.value, FINAL_STATUSES]))

    def _relist(self) -> str:
        return relist_json(self.keys, self.clock().timestamp() * 1000)

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
                args=[NAMES, encode_field(self.clock()), job_id, self.keys.arq_id(job_id), stored,
                      JobStatus.QUEUED.value, JobStatus.RUNNING.value, JobStatus.CANCELLED.value, counts,
                      self.keys.job_finished(job_id), self.keys.job_changed(job_id), self._relist()],
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

