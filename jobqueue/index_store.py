"""Job indexes in Redis: `JobStore`'s half that keeps the jobs index, the listing indexes and the deadlines (a mixin
of `JobStore`, so it stays the one writer of job state).

    await store.index(record)                # the manager's backfill of the listing indexes
    await store.index_many(records)          # the same, in one round trip
    await store.prune_index(index, ids)      # the garbage collector, once records are gone
    await store.due_deadlines(now)           # the reaper's expired jobs
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobqueue.keys import Keys
from jobqueue.listing_index import submit_listing
from jobqueue.models import JobRecord
from jobqueue.store_scripts import NAMES

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript


class IndexedJobs:
    """The index methods of `JobStore` (see the module's doc)."""

    redis: Redis
    keys: Keys
    _index_job: AsyncScript
    _forget_empty_index: AsyncScript

    async def index(self, record: JobRecord) -> bool:
        """Put a job that is already there into the listing indexes (idempotent: the manager's backfill of jobs
        written before them). Its state index is the one of its status when the script runs. False: no record."""
        return int(await self._index_job(keys=[self.keys.job(record.job_id)], args=self._index_args(record))) == 1

    async def index_many(self, records: Sequence[JobRecord]) -> list[str]:
        """`index` for each of these jobs, in one round trip; the ids of those there to index."""
        if not records:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for record in records:
                await self._index_job(keys=[self.keys.job(record.job_id)], args=self._index_args(record), client=pipe)
            replies = await pipe.execute()
        return [r.job_id for r, done in zip(records, replies, strict=True) if int(done) == 1]

    def _index_args(self, record: JobRecord) -> list[Any]:
        return [NAMES, record.job_id, submit_listing(self.keys, record, with_state=False),
                json.dumps(self.keys.jobs_by_state()), repr(record.submitted_at.timestamp() * 1000)]

    async def forget_empty_index(self, index: str) -> bool:
        """Drop a per-value listing index from <p>listing-indexes once it is empty (the garbage collector)."""
        return int(await self._forget_empty_index(keys=[self.keys.listing_indexes, index])) == 1

    async def forget_deadline(self, job_id: str) -> None:
        await self.redis.zrem(self.keys.deadlines, job_id)

    async def prune_index(self, index: str, job_ids: Iterable[str]) -> None:
        """Remove job ids from an index zset (`jobs`, `deadlines`, `schedule-runs:<name>`) once their records are
        gone (the garbage collector)."""
        ids = list(job_ids)
        if ids:
            await self.redis.zrem(index, *ids)

    async def due_deadlines(self, now: datetime, limit: int = 1000) -> list[str]:
        ids = await self.redis.zrangebyscore(self.keys.deadlines, "-inf", now.timestamp() * 1000, 0, limit)
        return [i.decode() for i in ids]

    async def recent(self, limit: int = 50) -> list[str]:
        ids = await self.redis.zrevrange(self.keys.jobs_index, 0, limit - 1)
        return [i.decode() for i in ids]
