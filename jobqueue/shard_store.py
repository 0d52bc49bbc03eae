"""Sharded queries in Redis: `JobStore`'s half that writes and reads a parent and its shards (a mixin of `JobStore`,
so it stays the one writer of job state).

A sharded query is one parent record and N shard jobs (`jobqueue.sharding`). The shards are ordinary jobs, queued by
the ordinary `SUBMIT` script (so quotas, counters, fair share and listings see them as jobs of their owner); the
parent is a record on no queue, with `shard_ids` and `num_workers`, counted nowhere. All N + 1 are written in one
MULTI/EXEC transaction. The parent's stored status stays `queued` (or `cancelled`): readers get its state derived
from its shards' (`with_shards`, called by `JobStore.get`).

`num_workers=W` (held/released design): shards 0..W-1 are queued due now, the rest held (a queue score never due,
`HELD_SCORE_MS`, so neither consumers nor the manager's `decide()` count them as ready: the group scales to
min(N, W, max_instances)). Each shard's end releases one held sibling (`RELEASE_SHARD`, once per shard), so at most
W shards of the query are ever due or running, across every consumer, with no check at take time.

Listings (`jobqueue.listing_index`) show a sharded query as its parent, so the parent is kept in the state index of its
derived state, and in the wait and duration indexes once it has them (`relist_parent`): when a shard starts (the
consumer's claim), when one ends (`release_shard`), when the query is cancelled, and by the manager's listing upkeep
(level-triggered: whatever was missed). The shards are in the index of every shard, which listings leave out unless
asked, and in their parent's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import WatchError

from jobqueue.keys import JOB_JSON_FIELDS, JobField, Keys, submitted_event
from jobqueue.listing_index import timings_ms
from jobqueue.models import JobRecord, JobStatus
from jobqueue.sharding import derive_parent
from jobqueue.store_scripts import HELD_SCORE_MS, SUBMIT_CREATED

RELIST_TRIES = 10  # reads of a parent and its shards that a shard's change may cut short, per `relist_parent`

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from jobqueue.fair_share import FairShare
    from jobqueue.jobstore import CancelOutcome
    from jobqueue.quotas import Quota


def decode_record(job_id: str, raw: dict[bytes, bytes]) -> JobRecord | None:
    """A record from its stored hash (None: no hash)."""
    if not raw:
        return None
    data = {k.decode(): v.decode() for k, v in raw.items()}
    values: dict[str, Any] = {"job_id": job_id, "status": data.pop(JobField.STATUS)}
    for name, text in data.items():
        if name in JOB_JSON_FIELDS:
            values[name] = json.loads(text)
    return JobRecord.model_validate(values)


@dataclass(frozen=True)
class ShardSubmission:
    """One shard to enqueue: its record and arq job; `held`: queued never due until a sibling's end releases it."""

    record: JobRecord
    queue: str
    arq_job: bytes
    expires_ms: int
    held: bool = False


class ShardedJobs:
    """The sharded-query methods of `JobStore` (see the module's doc)."""

    redis: Redis
    keys: Keys
    ttl_seconds: int
    _submit: AsyncScript
    _release_shard: AsyncScript
    _index_job: AsyncScript

    def _submit_call(self, record: JobRecord, queue: str | None, arq_job: bytes, expires_ms: int,
                     quotas: Sequence[Quota], score_ms: int | None = None, fair: FairShare | None = None,
                     wake: tuple[str, str] | None = None) -> tuple[list[str], list[Any], list[list[Any]]]:
        raise NotImplementedError

    def _index_args(self, record: JobRecord) -> list[Any]:
        raise NotImplementedError

    def _record_pairs(self, record: JobRecord) -> list[str]:
        raise NotImplementedError

    async def request_cancel(self, job_id: str) -> CancelOutcome:
        raise NotImplementedError

    async def submit_sharded(self, parent: JobRecord, shards: Sequence[ShardSubmission],
                             fair: FairShare | None = None, wake: tuple[str, str] | None = None) -> None:
        """Write the parent (in the listing indexes too) and enqueue every shard in one transaction (nothing, or
        all of them); the shards due at once are scored by `fair` (a held one is scored when released).

        `wake`: (channel, message) published once, by the submit script of the first shard due at once (shard 0:
        `num_workers` is at least 1), so the manager and the group's idle consumers look when the transaction has
        written them all; a held shard wakes them when it is released (`release_shard`)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            key = self.keys.job(parent.job_id)
            pipe.hset(key, mapping=dict(zip(*[iter(self._record_pairs(parent))] * 2, strict=True)))
            pipe.expire(key, self.ttl_seconds)
            pipe.zadd(self.keys.jobs_index, {parent.job_id: parent.submitted_at.timestamp() * 1000})
            await self._index_job(keys=[key], args=self._index_args(parent), client=pipe)
            waker = next((i for i, shard in enumerate(shards) if not shard.held), None)
            for i, shard in enumerate(shards):
                keys, args, _ = self._submit_call(shard.record, shard.queue, shard.arq_job, shard.expires_ms, (),
                                                  score_ms=HELD_SCORE_MS if shard.held else None, fair=fair,
                                                  wake=wake if i == waker else None)
                await self._submit(keys=keys, args=args, client=pipe)
            replies = await pipe.execute()
        if any(int(reply[0]) != SUBMIT_CREATED for reply in replies[4:]):  # ids are new uuids: never seen
            raise RuntimeError(f"a shard of {parent.job_id} existed already")

    async def shard_records(self, parent: JobRecord) -> list[JobRecord]:
        """The parent's shards' records, in shard order (one round trip; a shard whose record expired is left out)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in parent.shard_ids:
                pipe.hgetall(self.keys.job(shard))
            raws = await pipe.execute()
        records = [decode_record(shard, raw) for shard, raw in zip(parent.shard_ids, raws, strict=True)]
        return [r for r in records if r is not None]

    async def with_shards(self, parent: JobRecord) -> JobRecord:
        """The parent as readers see it: state, progress, rows done and summary derived from its shards."""
        return derive_parent(parent, await self.shard_records(parent))

    async def release_shard(self, shard_id: str, parent_id: str, group: str) -> str | None:
        """A shard has ended: tell the parent's waiters, and release one held sibling (once per shard). Returns
        the released sibling's job id."""
        raw = await cast(Awaitable[bytes | None], self.redis.hget(self.keys.job(parent_id), JobField.SHARD_IDS))
        siblings: list[str] = json.loads(raw) if raw else []
        released = await self._release_shard(
            keys=[self.keys.queue(group), self.keys.shard_released(parent_id)],
            args=[shard_id, json.dumps([self.keys.arq_id(s) for s in siblings]), HELD_SCORE_MS,
                  int(time.time() * 1000), self.keys.job_finished(parent_id), self.ttl_seconds])
        await self.relist_parent(parent_id)
        if not released:
            return None
        await self.redis.publish(self.keys.events, submitted_event(group))  # idle consumers look at once
        return self.keys.job_id_of(released.decode())

    async def cancel_sharded(self, parent_id: str) -> list[CancelOutcome]:
        """Cancel a sharded query: the parent is marked (its derived state becomes `cancelled` once no shard runs)
        and every unfinished shard is cancelled (queued ones at once, running ones by their consumers).

        A running shard's end tells the parent's waiters (`release_shard`); a queued one's cancel (or expiry) tells
        only its own. So when the parent is final here (cancelling its queued shards made it so, or the shard that
        failed or expired and asked for this did), its final state is published on its finished channel (`wait()`
        on the parent returns on it, not at its next re-read; a waiter told twice reads once more)."""
        key = self.keys.job(parent_id)
        raw = await cast(Awaitable[bytes | None], self.redis.hget(key, JobField.SHARD_IDS))
        await cast(Awaitable[int], self.redis.hset(key, JobField.CANCEL_REQUESTED, "true"))
        shards: list[str] = json.loads(raw) if raw else []
        outcomes = list(await asyncio.gather(*(self.request_cancel(s) for s in shards)))
        await self.relist_parent(parent_id)
        status = await self.parent_status(parent_id)
        if status is not None and status.is_final:
            await self.redis.publish(self.keys.job_finished(parent_id), status.value)
        return outcomes

    async def parent_status(self, parent_id: str) -> JobStatus | None:
        raw = await cast(Awaitable[dict[bytes, bytes]], self.redis.hgetall(self.keys.job(parent_id)))
        record = decode_record(parent_id, raw)
        return None if record is None else (await self.with_shards(record)).status

    async def relist_parent(self, parent_id: str, dry_run: bool = False, unless: JobStatus | None = None) -> bool:
        """Put a sharded query's parent in the listing index of its derived state (out of the others), and in the
        wait and duration indexes once it has them. Against the shards' transitions it is atomic: the parent and its
        shards are WATCHed while they are read, and a change meanwhile reads them again (at most `RELIST_TRIES` times:
        then the manager's listing upkeep puts it right). Returns whether an index
        changed (`dry_run`: would change; nothing is written). `unless`: nothing is read or written when the parent
        is listed in that state already (a shard's start: the second one finds its query listed running)."""
        key = self.keys.job(parent_id)
        states = self.keys.jobs_by_state()
        if unless is not None and await self.redis.zscore(states[unless.value], parent_id) is not None:
            return False
        raw = await cast(Awaitable[bytes | None], self.redis.hget(key, JobField.SHARD_IDS))
        shard_keys = [self.keys.job(s) for s in (json.loads(raw) if raw else [])]
        if not shard_keys:
            return False
        for _ in range(RELIST_TRIES):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key, *shard_keys)
                    record = decode_record(parent_id, await cast(Awaitable[dict[bytes, bytes]],
                                                                 self.redis.hgetall(key)))
                    if record is None:
                        return False
                    derived = await self.with_shards(record)
                    want: dict[str, float | None] = {states[s.value]: None for s in JobStatus}
                    want[states[derived.status.value]] = record.submitted_at.timestamp() * 1000
                    wait, ran = timings_ms(derived)
                    if wait is not None:
                        want[self.keys.jobs_by_wait] = wait
                    if ran is not None:
                        want[self.keys.jobs_by_duration] = ran
                    async with self.redis.pipeline(transaction=False) as read:
                        for index in want:
                            read.zscore(index, parent_id)
                        have = dict(zip(want, await read.execute(), strict=True))
                    changes = {k: v for k, v in want.items() if have[k] != v}
                    if not changes or dry_run:
                        return bool(changes)
                    pipe.multi()
                    for index, score in changes.items():
                        if score is None:
                            pipe.zrem(index, parent_id)
                        else:
                            pipe.zadd(index, {parent_id: score})
                    await pipe.execute()
                    return True
                except WatchError:
                    continue
        return False
