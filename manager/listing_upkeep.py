"""Upkeep of the listing indexes (`jobqueue.listing_index`), run by the garbage collector (`manager.gc`):

    backfill          jobs in `<p>jobs` that are not in the state index of their status: written before the
                      listing indexes existed, or by an older writer during an upgrade. Each is indexed by
                      `JobStore.index` (one script that reads the status itself), so running it again changes nothing.
                      A sharded query's parent is listed by its derived state (`JobStore.relist_parent`): one whose
                      shards' ends or starts were not relisted (a writer cut off) is put right here. Its shards
                      (its `shard_ids`) missing from its per-parent index or the index of every shard (submitted
                      before those indexes existed: `jobs(parent=<id>)` would not find them) are indexed too, at
                      most a batch of them per run (`whole`: all); a run that stops inside a batch of `<p>jobs` for
                      want of room goes on from that batch next time.
    listing_indexes   entries whose record has expired, in every listing index: the state indexes, the wait and
                      duration indexes and each `jobs-by:<kind>:<value>` of <p>listing-indexes; an index left empty
                      is forgotten.

Level-triggered: each run looks at what is there, a bounded number of entries at a time, and the next run goes on
where it stopped (from the start again at the end).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from jobqueue.jobstore import JobStore
from jobqueue.keys import JobField, Keys, ListingIndex

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
        """Index the jobs of `<p>jobs` that are not in their state's index, and the shards of the parents among them
        that are not in their shard indexes; `whole`: the whole of `<p>jobs` now (at the manager's start), else
        `BACKFILL_SCAN_FACTOR` batches from where the last run stopped, and at most a batch of shards."""
        counts = UpkeepCounts()
        states = self.keys.jobs_by_state()
        budget = None if whole else self.batch * BACKFILL_SCAN_FACTOR
        shard_room = None if whole else [self.batch]  # shards this run may still index (a cell: spent as it goes)
        start = 0 if whole else self._backfill_at
        while budget is None or counts.examined < budget:
            ids = [m.decode() for m in await self.redis.zrange(self.keys.jobs_index, start, start + self.batch - 1)]
            counts.examined += len(ids)
            if ids and not await self._index_missing(ids, states, counts, dry_run, shard_room):
                break  # out of room for shards: the next run goes on from this batch
            start = start + len(ids) if len(ids) == self.batch else 0
            if start == 0:
                break
        if not whole and not dry_run:
            self._backfill_at = start
        return counts

    async def _index_missing(self, ids: list[str], states: dict[str, str], counts: UpkeepCounts,
                             dry_run: bool, shard_room: list[int] | None) -> bool:
        """Index the jobs of `ids` missing from their state's index and the shards missing from theirs; False when
        `shard_room` ran out before every missing shard of these jobs was indexed."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), JobField.STATUS)
            for job_id in ids:
                pipe.hget(self.keys.job(job_id), JobField.SHARD_IDS)
            for key in states.values():
                pipe.zmscore(key, ids)
            replies: list[Any] = await pipe.execute()
        n = len(ids)
        statuses, shard_ids = replies[:n], replies[n:2 * n]
        memberships = dict(zip(states, replies[2 * n:], strict=True))
        missing: list[str] = []
        parents: list[tuple[str, list[str]]] = []
        assert counts.changed is not None
        for i, (job_id, raw) in enumerate(zip(ids, statuses, strict=True)):
            if raw is None:
                continue  # expired: the clean-up's
            if shard_ids[i] and shard_ids[i] != b"[]":  # a sharded query's parent: listed by its derived state
                if await self.store.relist_parent(job_id, dry_run=dry_run):
                    counts.changed.append(job_id)
                parents.append((job_id, json.loads(shard_ids[i])))
                continue
            status = raw.decode()
            if status not in states or memberships[status][i] is None or any(
                    memberships[s][i] is not None for s in states if s != status):
                missing.append(job_id)
        shards = await self._unlisted_shards(parents)
        complete = shard_room is None or len(shards) <= shard_room[0]
        if shard_room is not None:
            shards = shards[:shard_room[0]]
            shard_room[0] -= len(shards)
        seen = set(missing)  # a shard may be in this batch as a job too
        todo = [*missing, *(s for s in shards if s not in seen)]
        records = [r for r in await self.store.get_many(todo) if r is not None]
        counts.changed += [r.job_id for r in records] if dry_run else await self.store.index_many(records)
        return complete

    async def _unlisted_shards(self, parents: list[tuple[str, list[str]]]) -> list[str]:
        """The shards of these parents (whose records are there) missing from their parent's index or the index of
        every shard, in the parents' and shard order."""
        if not parents:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for parent, shards in parents:
                pipe.zmscore(self.keys.jobs_by(ListingIndex.PARENT, parent), shards)
                pipe.zmscore(self.keys.shard_jobs, shards)
            replies: list[Any] = await pipe.execute()
        unlisted = [shard for i, (_, shards) in enumerate(parents)
                    for shard, by_parent, by_kind in zip(shards, replies[2 * i], replies[2 * i + 1], strict=True)
                    if by_parent is None or by_kind is None]
        if not unlisted:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in unlisted:
                pipe.exists(self.keys.job(shard))
            there = await pipe.execute()
        return [shard for shard, found in zip(unlisted, there, strict=True) if found]

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
