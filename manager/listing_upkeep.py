"""Upkeep of the listing indexes (`jobqueue.listing_index`), run by the garbage collector (`manager.gc`):

    backfill          jobs in `<p>jobs` that are not in the state index of their status: written before the
                      listing indexes existed, or by an older writer during an upgrade. Each is indexed by
                      `JobStore.index` (one script that reads the status itself), so running it again changes nothing.
    listing_indexes   entries whose record has expired, in every listing index: the state indexes, the wait and
                      duration indexes and each `jobs-by:<kind>:<value>` of <p>listing-indexes; an index left empty
                      is forgotten.

Level-triggered: each run looks at what is there, a bounded number of entries at a time, and the next run goes on
where it stopped (from the start again at the end).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from jobqueue.jobstore import JobStore
from jobqueue.keys import JobField, Keys

BACKFILL_SCAN_FACTOR = 20  # a run checks this many batches of `<p>jobs` for unindexed jobs (cheap reads)


@dataclass
class UpkeepCounts:
    examined: int = 0
    changed: list[str] | None = None  # the job ids indexed or index entries removed

    def __post_init__(self) -> None:
        self.changed = self.changed or []


class ListingUpkeep:
    def __init__(self, redis: Redis, keys: Keys, store: JobStore, batch: int) -> None:
        self.redis, self.keys, self.store, self.batch = redis, keys, store, batch
        self._backfill_at = 0  # rank in <p>jobs where the next backfill goes on
        self._clean_key: str | None = None  # the index the next clean goes on with, and its rank
        self._clean_at = 0

    async def backfill(self, dry_run: bool = False, whole: bool = False) -> UpkeepCounts:
        """Index the jobs of `<p>jobs` that are not in their state's index; `whole`: the whole of `<p>jobs` now (at
        the manager's start), else `BACKFILL_SCAN_FACTOR` batches from where the last run stopped."""
        counts = UpkeepCounts()
        states = self.keys.jobs_by_state()
        budget = None if whole else self.batch * BACKFILL_SCAN_FACTOR
        start = 0 if whole else self._backfill_at
        while budget is None or counts.examined < budget:
            ids = [m.decode() for m in await self.redis.zrange(self.keys.jobs_index, start, start + self.batch - 1)]
            counts.examined += len(ids)
            if ids:
                await self._index_missing(ids, states, counts, dry_run)
            start = start + len(ids) if len(ids) == self.batch else 0
            if start == 0:
                break
        if not whole and not dry_run:
            self._backfill_at = start
        return counts

    async def _index_missing(self, ids: list[str], states: dict[str, str], counts: UpkeepCounts,
                             dry_run: bool) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), JobField.STATUS)
            for key in states.values():
                pipe.zmscore(key, ids)
            replies: list[Any] = await pipe.execute()
        statuses, memberships = replies[:len(ids)], dict(zip(states, replies[len(ids):], strict=True))
        missing = []
        for i, (job_id, raw) in enumerate(zip(ids, statuses, strict=True)):
            if raw is None:
                continue  # expired: the clean-up's
            status = raw.decode()
            if status not in states or memberships[status][i] is None or any(
                    memberships[s][i] is not None for s in states if s != status):
                missing.append(job_id)
        if not missing:
            return
        assert counts.changed is not None
        for record in await self.store.get_many(missing):
            if record is not None and (dry_run or await self.store.index(record)):
                counts.changed.append(record.job_id)

    async def _indexes(self) -> list[str]:
        named = await cast(Awaitable[set[bytes]], self.redis.smembers(self.keys.listing_indexes))
        fixed = [*self.keys.jobs_by_state().values(), self.keys.jobs_by_wait, self.keys.jobs_by_duration]
        return fixed + sorted(k.decode() for k in named)

    async def clean(self, dry_run: bool = False) -> UpkeepCounts:
        """Remove up to a batch's worth of entries of expired records from the listing indexes, index after index."""
        counts = UpkeepCounts()
        keys = await self._indexes()
        if self._clean_key in keys:
            keys = keys[keys.index(self._clean_key):]
        else:
            self._clean_key, self._clean_at = None, 0
        budget = self.batch
        for key in keys:
            if budget <= 0:
                break
            offset, asked = (self._clean_at if key == self._clean_key else 0), budget
            ids = [m.decode() for m in await self.redis.zrange(key, offset, offset + asked - 1)]
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.exists(self.keys.job(job_id))
                exists = await pipe.execute() if ids else []
            gone = [job_id for job_id, found in zip(ids, exists, strict=True) if not found]
            counts.examined += len(ids)
            assert counts.changed is not None
            counts.changed += gone
            budget -= len(ids)
            if dry_run:
                continue
            await self.store.prune_index(key, gone)
            if len(ids) == asked:  # stopped inside this index (or at its end): go on here next run
                self._clean_key, self._clean_at = key, offset + len(ids) - len(gone)
                return counts
            if key.startswith(self.keys.jobs_by_prefix):
                await self.store.forget_empty_index(key)
        if not dry_run:
            self._clean_key, self._clean_at = None, 0
        return counts
