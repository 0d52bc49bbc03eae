"""Never lose a job: re-queue jobs whose consumer died, and expire jobs past their deadline.

Runs on every manager tick. Without it a job whose consumer was killed would wait for arq's
in-progress key to expire (the job timeout: hours) before anyone ran it again.

- A `running:<group>` entry whose heartbeat key has expired belongs to a lost consumer. If the
  record is still `running` for that consumer, it goes back to `queued` (its attempt counted,
  the loss recorded) and arq's in-progress lock is released so another consumer picks it up;
  when its retries are used up it becomes `failed` instead.
- A job past its `completion_deadline` that is still queued becomes `expired` and leaves the
  queue. A running one is stopped by its own consumer's watcher (or reaped as above).
- A queue entry that can never be due (its score is past any time) is rejected (`jobqueue.entries`):
  no consumer would ever see it.

One entry that cannot be handled (an unreadable record, say) is logged once and skipped; it never
stops the others, or the tick.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from jobqueue import entries
from jobqueue.jobstore import JobStore
from jobqueue.keys import Keys
from jobqueue.logs import capped, get_logger
from jobqueue.models import JobStatus
from jobqueue.outage import REDIS_UNREACHABLE
from jobqueue.storage import Storage

log = get_logger("jobqueue.manager.reaper")


@dataclass(frozen=True)
class ReapReport:
    requeued: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()


class Reaper:
    def __init__(self, redis: Redis, keys: Keys, store: JobStore, heartbeat_ttl: float,
                 storage: Storage | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.heartbeat_ttl = heartbeat_ttl
        self.storage = storage  # deletes the staged input of rejected entries
        self._skipped: dict[str, str] = {}  # job id -> the error it was skipped for (logged once)

    async def run(self, running: Mapping[str, Mapping[str, str]], now: datetime | None = None,
                  unreachable: Mapping[str, tuple[str, ...]] | None = None) -> ReapReport:
        """`running`: each group's running entries (job id -> consumer id), as the tick observed them;
        `unreachable`: each group's queue members that can never be due."""
        now = now or datetime.now(UTC)
        requeued: list[str] = []
        failed: list[str] = []
        for group, job_id, owner in await self._lost(running):
            outcome = await self._isolated(job_id, self._recover(group, job_id, owner))
            (requeued if outcome == "requeued" else failed if outcome == "failed" else []).append(job_id)
        for group, members in (unreachable or {}).items():
            for member in members:
                reason = "its queue score is past any time, so it would never be due"
                await self._isolated(member, entries.reject(self.keys, self.store, self.storage, group, member,
                                                            reason))
        expired = await self._expire(now)
        return ReapReport(tuple(requeued), tuple(failed), tuple(expired))

    async def _isolated(self, job_id: str, work: Any) -> Any:
        """Run one entry's work; a failure other than Redis being away is logged once for that entry and skipped."""
        try:
            result = await work
        except REDIS_UNREACHABLE:
            raise
        except Exception as e:
            error = capped(f"{type(e).__name__}: {e}")
            if self._skipped.get(job_id) != error:
                self._skipped[job_id] = error
                log.error("job skipped by the reaper; the others go on", job_id=job_id, error=error)
            return None
        self._skipped.pop(job_id, None)
        return result

    async def _lost(self, running: Mapping[str, Mapping[str, str]]) -> list[tuple[str, str, str]]:
        """Running entries whose heartbeat key is gone: one pipelined round trip for every group."""
        entries = [(group, job_id, owner) for group, jobs in running.items() for job_id, owner in jobs.items()]
        if not entries:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for _, job_id, _ in entries:
                pipe.exists(self.keys.heartbeat(job_id))
            alive = await pipe.execute()
        return [entry for entry, ok in zip(entries, alive, strict=True) if not ok]

    async def _recover(self, group: str, job_id: str, owner: str) -> str:
        record = await self.store.get(job_id)
        outcome = "cleaned"
        if record is not None and record.status is JobStatus.RUNNING and record.consumer_id == owner:
            loss = f"attempt {record.attempts}: consumer {owner} lost (no heartbeat for {self.heartbeat_ttl:g}s)"
            errors = [*record.errors, loss]
            if record.attempts <= record.max_retries and await self.store.requeue(job_id, errors, owner=owner):
                outcome = "requeued"
            elif await self.store.mark_failed(job_id, loss, errors=errors, owner=owner):
                outcome = "failed"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.running(group), job_id)
            pipe.delete(self.keys.arq_in_progress(job_id))  # lets any consumer of the group pick it up again
            if outcome == "failed" or (record is not None and record.status.is_final):
                pipe.zrem(self.keys.queue(group), self.keys.arq_id(job_id))
                pipe.delete(self.keys.arq_job(job_id))
            await pipe.execute()
        if outcome != "cleaned":
            log.warning("reaped job of a lost consumer", job_id=job_id, consumer_id=owner, outcome=outcome,
                        group=group)
        return outcome

    async def _expire(self, now: datetime) -> list[str]:
        expired = []
        for job_id in await self.store.due_deadlines(now):
            if await self._isolated(job_id, self._expire_one(job_id)):
                expired.append(job_id)
        return expired

    async def _expire_one(self, job_id: str) -> bool:
        record = await self.store.get(job_id)
        if record is None or record.status.is_final:
            await self.redis.zrem(self.keys.deadlines, job_id)
            return False
        if record.status is JobStatus.QUEUED and await self.store.mark_expired(
            job_id, "completion deadline passed while queued"
        ):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.keys.queue(record.resource_group), self.keys.arq_id(job_id))
                pipe.delete(self.keys.arq_job(job_id))
                await pipe.execute()
            log.info("job expired in queue", job_id=job_id, group=record.resource_group)
            return True
        return False
