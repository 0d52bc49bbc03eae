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
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from jobqueue.errors import JobStateError
from jobqueue.keys import Keys
from jobqueue.logs import capped
from jobqueue.models import JobRecord, JobStatus, PerformanceSummary

SECONDS_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 10800)
BYTES_BUCKETS = (0, 1 << 20, 16 << 20, 128 << 20, 1 << 30, 8 << 30, 64 << 30)
# histogram name -> bucket upper bounds: the Lua below counts into them, the manager exposes all of them
HISTOGRAM_BUCKETS = {"job_queue_wait_seconds": SECONDS_BUCKETS, "job_run_seconds": SECONDS_BUCKETS,
                     "job_spilled_bytes": BYTES_BUCKETS}


class DuplicateJobId(JobStateError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job id {job_id} already exists; nothing was submitted")


# KEYS[1] job hash, KEYS[2] deadlines zset, KEYS[3] counters (`<state>:<group>` per transition, `retried` for
# back-to-queued, `spilled_bytes:<group>`, and with a scan cache
# `scan_cache_{bytes_cache,bytes_remote,evictions,hits,misses}:<group>`); to release the job from its consumer,
# also KEYS[4] its group's running hash and KEYS[5] its heartbeat, from which it is removed.
# ARGV[1] comma-separated allowed current states; ARGV[2] new state; ARGV[3] job id;
# ARGV[4] required consumer_id, JSON ('' for any); ARGV[5] '1' when the new state is final; ARGV[6..] field/value
# pairs. One round trip. Returns 1 applied, 0 wrong state or owner, -1 no such job.
_TRANSITION = """
-- histograms kept as cumulative bucket counters: hist:<name>:<group>:<le>, and :sum
local SECONDS = {SECONDS_BUCKETS}
local BYTES = {BYTES_BUCKETS}
local function observe(key, name, group, value, buckets)
  local prefix = 'hist:' .. name .. ':' .. group .. ':'
  for _, le in ipairs(buckets) do
    if value <= le then redis.call('HINCRBY', key, prefix .. le, 1) end
  end
  redis.call('HINCRBY', key, prefix .. '+Inf', 1)
  redis.call('HINCRBYFLOAT', key, prefix .. 'sum', value)
end
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return -1 end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'consumer_id') ~= ARGV[4] then return 0 end
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == cur then
    redis.call('HSET', KEYS[1], 'status', ARGV[2])
    local group = cjson.decode(redis.call('HGET', KEYS[1], 'resource_group') or '""')
    local counter = ARGV[2]
    if counter == 'queued' then counter = 'retried' end
    redis.call('HINCRBY', KEYS[3], counter .. ':' .. group, 1)
    for i = 6, #ARGV, 2 do
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
      if ARGV[i] == 'summary' then
        local sm = cjson.decode(ARGV[i + 1])
        redis.call('HINCRBY', KEYS[3], 'spilled_bytes:' .. group, sm['spilled_bytes'])
        if sm['scan_cache_enabled'] then
          redis.call('HINCRBY', KEYS[3], 'scan_cache_bytes_cache:' .. group, sm['bytes_from_cache'] or 0)
          redis.call('HINCRBY', KEYS[3], 'scan_cache_bytes_remote:' .. group, sm['bytes_from_remote'] or 0)
          redis.call('HINCRBY', KEYS[3], 'scan_cache_evictions:' .. group, sm['scan_cache_evictions'] or 0)
          redis.call('HINCRBY', KEYS[3], 'scan_cache_hits:' .. group, sm['scan_cache_hits'] or 0)
          redis.call('HINCRBY', KEYS[3], 'scan_cache_misses:' .. group, sm['scan_cache_misses'] or 0)
        end
        observe(KEYS[3], 'job_queue_wait_seconds', group, sm['queue_wait_seconds'], SECONDS)
        observe(KEYS[3], 'job_run_seconds', group, sm['total_seconds'], SECONDS)
        observe(KEYS[3], 'job_spilled_bytes', group, sm['spilled_bytes'], BYTES)
      end
    end
    if ARGV[5] == '1' then redis.call('ZREM', KEYS[2], ARGV[3]) end
    if #KEYS == 5 then
      redis.call('HDEL', KEYS[4], ARGV[3])
      redis.call('DEL', KEYS[5])
    end
    return 1
  end
end
return 0
"""
_TRANSITION = _TRANSITION.replace("{SECONDS_BUCKETS}", "{" + ", ".join(map(str, SECONDS_BUCKETS)) + "}").replace(
    "{BYTES_BUCKETS}", "{" + ", ".join(map(str, BYTES_BUCKETS)) + "}")

# KEYS[1] job hash, KEYS[2] running hash, KEYS[3] heartbeat, KEYS[4] counters. ARGV[1] consumer id, ARGV[2] the same
# as JSON, ARGV[3] started_at JSON, ARGV[4] heartbeat TTL milliseconds, ARGV[5] job id.
# queued -> running, attempt counted, running entry and heartbeat set: one round trip.
# Returns {1, attempts, errors JSON} when claimed, {0, status} when not, {-1} with no record.
_CLAIM = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return {-1} end
if cur ~= 'queued' then return {0, cur} end
redis.call('HSET', KEYS[1], 'status', 'running', 'consumer_id', ARGV[2], 'started_at', ARGV[3], 'progress', '0.0')
redis.call('HINCRBY', KEYS[4], 'started:' .. cjson.decode(redis.call('HGET', KEYS[1], 'resource_group') or '""'), 1)
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[2], ARGV[5], ARGV[1])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[4])
return {1, attempts, redis.call('HGET', KEYS[1], 'errors') or '[]'}
"""

# KEYS[1] job hash. queued -> cancelled (1); running -> cancel_requested (2); else 0; none -1 (`CancelOutcome`).
_REQUEST_CANCEL = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return -1 end
if cur == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1])
  redis.call('HINCRBY', KEYS[2], 'cancelled:' .. cjson.decode(redis.call('HGET', KEYS[1], 'resource_group') or '""'), 1)
  return 1
end
if cur == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', 'true')
  return 2
end
return 0
"""

# KEYS[1] oom-kill:<consumer>, KEYS[2] counters. ARGV[1] the kill as JSON, ARGV[2] its kill id, ARGV[3] group,
# ARGV[4] TTL ms. Keeps the consumer's latest kill and counts `oom_kills:<group>` once per kill id. Returns 1 when new.
_RECORD_OOM_KILL = """
local known = redis.call('GET', KEYS[1])
if known and cjson.decode(known)['kill_id'] == ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'oom_kills:' .. ARGV[3], 1)
return 1
"""
OOM_KILL_TTL_SECONDS = 3600  # long past the heartbeat TTL after which the reaper takes the jobs of the killed

_JSON_FIELDS = (
    "resource_group", "output", "input_rows", "submitted_at", "started_at", "finished_at", "consumer_id",
    "progress", "attempts", "max_retries", "completion_deadline", "cancel_requested", "errors", "error",
    "result_uri", "summary",
)
QUEUED, RUNNING = [JobStatus.QUEUED], [JobStatus.RUNNING]


@dataclass(frozen=True)
class Claim:
    claimed: bool
    attempt: int
    errors: list[str]  # earlier attempts' errors
    status: str | None  # the status found (when not claimed)


class CancelOutcome(enum.IntEnum):
    """What a cancel request did (the reply of `_REQUEST_CANCEL`)."""

    NO_JOB = -1
    ALREADY_FINAL = 0  # finished, or cancelled before: nothing changed
    CANCELLED_QUEUED = 1  # it was queued: cancelled now
    STOP_REQUESTED = 2  # it is running: its consumer is asked to stop it


def heartbeat_ms(ttl_seconds: float) -> int:
    """A heartbeat TTL in whole milliseconds (PX), so a fractional setting is kept, not truncated."""
    return max(1, round(ttl_seconds * 1000))


def _now() -> datetime:
    return datetime.now(UTC)


def _encode(value: Any) -> str:
    if isinstance(value, datetime):
        return json.dumps(value.isoformat())
    if isinstance(value, PerformanceSummary):
        return value.model_dump_json()
    return json.dumps(value)


class JobStore:
    """The I/O for job records. Holds no state beyond its Redis client and key layout."""

    def __init__(self, redis: Redis, keys: Keys, ttl_seconds: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_seconds = ttl_seconds
        self._transition = redis.register_script(_TRANSITION)
        self._claim = redis.register_script(_CLAIM)
        self._request_cancel = redis.register_script(_REQUEST_CANCEL)
        self._record_oom_kill = redis.register_script(_RECORD_OOM_KILL)

    async def create(self, record: JobRecord) -> None:
        """Write a record without enqueueing it (tests plant records for hand-made queue entries this way).
        Submissions go through `submit`, which writes the record and the queue entry together."""
        async with self.redis.pipeline(transaction=True) as pipe:
            self._write_record(pipe, record)
            await pipe.execute()

    async def submit(self, record: JobRecord, queue: str, arq_job: bytes, expires_ms: int,
                     exclusive: bool = False) -> bool:
        """Create the record and put its arq job on `queue` in one transaction, so that no crash or
        lost connection can leave a record without a queue entry or a queue entry without a record.

        An id that already has a record returns False with `exclusive` (deterministic ids: scheduled
        runs are created once however many managers try); otherwise it raises `DuplicateJobId` and
        writes nothing. Retries by itself only when the watched keys changed underneath it."""
        key, arq_key = self.keys.job(record.job_id), self.keys.arq_job(record.job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key, arq_key)
                    if await pipe.exists(key, arq_key, self.keys.arq_result(record.job_id)):
                        await pipe.reset()
                        if exclusive:
                            return False
                        raise DuplicateJobId(record.job_id)
                    pipe.multi()
                    self._write_record(pipe, record)
                    pipe.psetex(arq_key, expires_ms, arq_job)
                    pipe.zadd(queue, {self.keys.arq_id(record.job_id): int(record.submitted_at.timestamp() * 1000)})
                    await pipe.execute()
                    return True
                except WatchError:
                    continue  # a racing writer: look again; the exists() check decides

    def _write_record(self, pipe: Pipeline, record: JobRecord) -> None:
        key = self.keys.job(record.job_id)
        fields = {name: _encode(getattr(record, name)) for name in _JSON_FIELDS}
        pipe.hset(key, mapping={"status": record.status.value, **fields})
        pipe.expire(key, self.ttl_seconds)
        pipe.zadd(self.keys.jobs_index, {record.job_id: record.submitted_at.timestamp() * 1000})
        pipe.hincrby(self.keys.counters, f"enqueued:{record.resource_group}", 1)
        if record.completion_deadline is not None:
            pipe.zadd(self.keys.deadlines, {record.job_id: record.completion_deadline.timestamp() * 1000})

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.keys.job(job_id)))
        if not raw:
            return None
        data = {k.decode(): v.decode() for k, v in raw.items()}
        values: dict[str, Any] = {"job_id": job_id, "status": data.pop("status")}
        for name, text in data.items():
            if name in _JSON_FIELDS:
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
        **fields: Any,
    ) -> int:
        """Set `status=new` (and `fields`) only if the status is in `allowed` (and, with `owner`,
        the job belongs to that consumer). With `release=<group>` the job's running entry and
        heartbeat go in the same round trip. Returns 1 applied, 0 not applied, -1 no record."""
        args: list[str] = [
            ",".join(s.value for s in allowed), new.value, job_id, _encode(owner) if owner else "",
            "1" if new.is_final else "0",
        ]
        for name, value in fields.items():
            if name not in _JSON_FIELDS:
                raise ValueError(f"unknown job field {name!r}")
            if name == "error" and isinstance(value, str):
                value = capped(value)
            elif name == "errors":
                value = [capped(e) for e in value]
            args += [name, _encode(value)]
        keys = [self.keys.job(job_id), self.keys.deadlines, self.keys.counters]
        if release:
            keys += [self.keys.running(release), self.keys.heartbeat(job_id)]
        return int(await self._transition(keys=keys, args=args))

    async def claim(self, job_id: str, consumer_id: str, group: str, heartbeat_ttl: float) -> Claim:
        """queued -> running for `consumer_id`: counts the attempt, sets the running entry and the
        heartbeat, and returns the attempt number and earlier errors, in one round trip."""
        reply = await self._claim(
            keys=[self.keys.job(job_id), self.keys.running(group), self.keys.heartbeat(job_id), self.keys.counters],
            args=[consumer_id, _encode(consumer_id), _encode(_now()), heartbeat_ms(heartbeat_ttl), job_id],
        )
        if int(reply[0]) != 1:
            return Claim(False, 0, [], reply[1].decode() if len(reply) > 1 else None)
        return Claim(True, int(reply[1]), json.loads(reply[2]), JobStatus.RUNNING.value)

    async def requeue(
        self, job_id: str, errors: list[str], owner: str = "", release: str = "", attempts: int | None = None
    ) -> bool:
        """running -> queued, keeping the attempt history; `owner` guards against a stale consumer.
        `attempts` resets the count (a run cut off by a shutdown does not use up a retry)."""
        fields: dict[str, Any] = {"errors": errors, "progress": 0.0}
        if attempts is not None:
            fields["attempts"] = attempts
        applied = await self.transition(job_id, RUNNING, JobStatus.QUEUED, owner=owner, release=release, **fields)
        return applied == 1

    async def mark_succeeded(
        self, job_id: str, result_uri: str, summary: PerformanceSummary, owner: str = "", release: str = ""
    ) -> bool:
        applied = await self.transition(
            job_id, RUNNING, JobStatus.SUCCEEDED, owner=owner, release=release,
            finished_at=_now(), result_uri=result_uri, summary=summary, progress=1.0,
        )
        return applied == 1

    async def mark_failed(
        self, job_id: str, error: str, errors: list[str] | None = None, owner: str = "", release: str = ""
    ) -> bool:
        applied = await self.transition(
            job_id, [JobStatus.QUEUED, JobStatus.RUNNING], JobStatus.FAILED, owner=owner, release=release,
            finished_at=_now(), error=error, errors=errors if errors is not None else [error],
        )
        return applied == 1

    async def mark_cancelled(self, job_id: str, owner: str = "", release: str = "") -> bool:
        applied = await self.transition(
            job_id, [JobStatus.QUEUED, JobStatus.RUNNING], JobStatus.CANCELLED, owner=owner, release=release,
            finished_at=_now(),
        )
        return applied == 1

    async def mark_expired(self, job_id: str, error: str, owner: str = "", release: str = "") -> bool:
        applied = await self.transition(
            job_id, [JobStatus.QUEUED, JobStatus.RUNNING], JobStatus.EXPIRED, owner=owner, release=release,
            finished_at=_now(), error=error,
        )
        return applied == 1

    async def request_cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a queued job now, or ask the running consumer to stop it."""
        result = CancelOutcome(int(await self._request_cancel(keys=[self.keys.job(job_id), self.keys.counters],
                                                              args=[_encode(_now())])))
        if result is CancelOutcome.CANCELLED_QUEUED:
            await self.redis.zrem(self.keys.deadlines, job_id)
        return result

    async def record_oom_kill(self, consumer_id: str, group: str, kill: dict[str, Any]) -> bool:
        """Remember that the kernel OOM-killed `consumer_id` (`kill` has `kill_id`, `limit`, `at`) and count it
        once per kill id, however often it is reported. True when it was new."""
        reply = await self._record_oom_kill(keys=[self.keys.oom_kill(consumer_id), self.keys.counters],
                                            args=[json.dumps(kill), kill["kill_id"], group,
                                                  OOM_KILL_TTL_SECONDS * 1000])
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
