"""Job records in Redis: create, read, and move between states atomically.

A record is the hash `<prefix>job:<id>`. `status` is a plain field so that a transition can be
checked and applied in one Lua call: the SDK's cancel and a consumer's start race safely, and
exactly one of them wins. Every other field holds JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from jobqueue.keys import Keys
from jobqueue.models import JobRecord, JobStatus, PerformanceSummary

# KEYS[1] job hash; ARGV[1] comma-separated allowed current states; ARGV[2] new state;
# ARGV[3..] field/value pairs to set with it. Returns 1 applied, 0 wrong state, -1 no such job.
_TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return -1 end
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == cur then
    redis.call('HSET', KEYS[1], 'status', ARGV[2])
    for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
    return 1
  end
end
return 0
"""

_JSON_FIELDS = ("resource_group", "output", "input_rows", "submitted_at", "started_at", "finished_at",
                "consumer_id", "progress", "error", "result_uri", "summary")


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

    async def create(self, record: JobRecord) -> None:
        key = self.keys.job(record.job_id)
        fields = {name: _encode(getattr(record, name)) for name in _JSON_FIELDS}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"status": record.status.value, **fields})
            pipe.expire(key, self.ttl_seconds)
            pipe.zadd(self.keys.jobs_index, {record.job_id: record.submitted_at.timestamp() * 1000})
            await pipe.execute()

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.hgetall(self.keys.job(job_id))
        if not raw:
            return None
        data = {k.decode(): v.decode() for k, v in raw.items()}
        values: dict[str, Any] = {"job_id": job_id, "status": data.pop("status")}
        for name, text in data.items():
            if name in _JSON_FIELDS:
                values[name] = json.loads(text)
        return JobRecord.model_validate(values)

    async def transition(
        self, job_id: str, allowed: Iterable[JobStatus], new: JobStatus, **fields: Any
    ) -> int:
        """Set `status=new` (and `fields`) only if the current status is in `allowed`.

        Returns 1 when applied, 0 when the job is in another state, -1 when there is no record.
        """
        args: list[str] = [",".join(s.value for s in allowed), new.value]
        for name, value in fields.items():
            if name not in _JSON_FIELDS:
                raise ValueError(f"unknown job field {name!r}")
            args += [name, _encode(value)]
        return int(await self._transition(keys=[self.keys.job(job_id)], args=args))

    async def mark_running(self, job_id: str, consumer_id: str) -> bool:
        applied = await self.transition(
            job_id, [JobStatus.QUEUED], JobStatus.RUNNING, started_at=_now(), consumer_id=consumer_id
        )
        return applied == 1

    async def mark_succeeded(self, job_id: str, result_uri: str, summary: PerformanceSummary) -> bool:
        applied = await self.transition(
            job_id, [JobStatus.RUNNING], JobStatus.SUCCEEDED,
            finished_at=_now(), result_uri=result_uri, summary=summary, progress=1.0,
        )
        return applied == 1

    async def mark_failed(self, job_id: str, error: str, allowed: Iterable[JobStatus] | None = None) -> bool:
        allowed = allowed or [JobStatus.QUEUED, JobStatus.RUNNING]
        applied = await self.transition(job_id, allowed, JobStatus.FAILED, finished_at=_now(), error=error)
        return applied == 1

    async def mark_cancelled(self, job_id: str) -> int:
        return await self.transition(job_id, [JobStatus.QUEUED], JobStatus.CANCELLED, finished_at=_now())

    async def set_progress(self, job_id: str, progress: float) -> None:
        await self.redis.hset(self.keys.job(job_id), "progress", json.dumps(round(progress, 4)))

    async def recent(self, limit: int = 50) -> list[str]:
        ids = await self.redis.zrevrange(self.keys.jobs_index, 0, limit - 1)
        return [i.decode() for i in ids]
