"""Never lose a job: re-queue jobs whose consumer died, and expire jobs past their deadline.

Runs on every manager tick. Without it the record of a job whose consumer was killed would stay
`running` for the dead consumer: once the take's lock lapsed (`jobstore.lock_lease_ms`), every take
would hand the entry back to its queue unrun, since a job held by another consumer never runs twice.

- A `running:<group>` entry whose heartbeat key has expired belongs to a lost consumer. If the
  record is still `running` for that consumer, it goes back to `queued` (its attempt counted,
  the loss recorded) and arq's in-progress lock is released so another consumer picks it up;
  when its retries are used up it becomes `failed` instead.
- When the kernel OOM-killed that consumer (the local backend saw it exit on SIGKILL with its memory
  cgroup's OOM-kill counter up; on Kubernetes its pod says `OOMKilled`), the attempt's error says
  `out of memory at <limit>` instead, and `oom_kills:<group>` counts the kill once.
- A job past its `completion_deadline` that is still queued becomes `expired` and leaves the
  queue. A running one is stopped by its own consumer's watcher (or reaped as above).
- A queue entry that can never be due (its score is past any time) is rejected (`jobqueue.entries`):
  no consumer would ever see it.
- A due entry of a job that is over, that no consumer has taken (`manager.observe`'s stale entries: its consumer
  was lost after the job's last transition, before arq removed the entry), is dropped (`JobStore.drop_stale_entry`):
  left there, it would start a consumer of a group scaled to zero just to drop it.

One entry that cannot be handled (an unreadable record, say) is logged once and skipped; it never
stops the others, or the tick.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis

from jobqueue import entries
from jobqueue.jobstore import CancelOutcome, JobStore
from jobqueue.keys import Keys
from jobqueue.logs import capped, get_logger
from jobqueue.models import JobRecord, JobStatus
from jobqueue.outage import REDIS_UNREACHABLE
from jobqueue.storage import Storage
from manager.backends.base import OomKill

log = get_logger("jobqueue.manager.reaper")
T = TypeVar("T")
OOM_CLOCK_SLACK_SECONDS = 1.0  # a kill time in whole seconds (Kubernetes) may read just before the job started


@dataclass(frozen=True)
class ReapReport:
    requeued: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()  # stale entries taken off their queue (job ids)


class OomSource(Protocol):
    """Where OOM kills come from: the scaler backend (see `ScalerBackend`)."""

    def pending_oom_kills(self) -> list[OomKill]: ...

    async def oom_killed(self, consumer_ids: set[str]) -> list[OomKill]: ...


class Reaper:
    def __init__(self, redis: Redis, keys: Keys, store: JobStore, heartbeat_ttl: float,
                 storage: Storage | None = None, oom_source: OomSource | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.heartbeat_ttl = heartbeat_ttl
        self.oom_source = oom_source
        self.storage = storage  # to remove the files of the jobs it fails, expires or rejects
        self._skipped: dict[str, str] = {}  # job id -> the error it was skipped for (logged once)

    async def _remove_files(self, job_id: str, result: bool) -> None:
        """A job the reaper ended needs its staged input no more, nor (failed) its result folder."""
        if self.storage is not None:
            await self.storage.discard_job_files(job_id, result)

    async def run(self, running: Mapping[str, Mapping[str, str]], now: datetime | None = None,
                  unreachable: Mapping[str, tuple[str, ...]] | None = None,
                  stale: Mapping[str, tuple[str, ...]] | None = None) -> ReapReport:
        """`running`: each group's running entries (job id -> consumer id), as the tick observed them;
        `unreachable`: each group's queue members that can never be due; `stale`: each group's job ids whose due
        entry is left over from a job that is over."""
        now = now or self.store.clock()
        requeued: list[str] = []
        failed: list[str] = []
        await self._record_pending_kills()
        lost = await self._lost(running)
        kills = await self._oom_kills({owner for _, _, owner in lost}) if lost else {}
        for group, job_id, owner in lost:
            outcome = await self._isolated(job_id, self._recover(group, job_id, owner, kills.get(owner)))
            (requeued if outcome == "requeued" else failed if outcome == "failed" else []).append(job_id)
        for group, members in (unreachable or {}).items():
            for member in members:
                reason = "its queue score is past any time, so it would never be due"
                await self._isolated(member, entries.reject(self.keys, self.store, self.storage, group, member,
                                                            reason))
        dropped: list[str] = []
        for group, job_ids in (stale or {}).items():
            for job_id in job_ids:
                if await self._isolated(job_id, self.store.drop_stale_entry(group, job_id)):
                    log.info("stale queue entry dropped: the job is over", job_id=job_id, resource_group=group)
                    dropped.append(job_id)
        expired = await self._expire(now)
        return ReapReport(tuple(requeued), tuple(failed), tuple(expired), tuple(dropped))

    async def _isolated(self, job_id: str, work: Awaitable[T]) -> T | None:
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

    async def _record_pending_kills(self) -> None:
        """OOM kills the backend saw, into Redis (counted once each); dropped from the backend once recorded."""
        if self.oom_source is None:
            return
        pending = self.oom_source.pending_oom_kills()
        for kill in list(pending):
            await self.store.record_oom_kill(kill.consumer_id, kill.group, asdict(kill))
            pending.remove(kill)

    async def _oom_kills(self, owners: set[str]) -> dict[str, dict[str, Any]]:
        """The recorded OOM kills of these consumers; the backend is asked about the others (Kubernetes pods)."""
        kills = await self.store.oom_kills(owners)
        missing = owners - set(kills)
        if missing and self.oom_source is not None:
            for kill in await self.oom_source.oom_killed(missing):
                await self.store.record_oom_kill(kill.consumer_id, kill.group, asdict(kill))
                kills[kill.consumer_id] = asdict(kill)
        return kills

    def _loss(self, record: JobRecord, owner: str, kill: dict[str, Any] | None) -> str:
        """The attempt's error: the OOM kill when it happened during this attempt, else the lost heartbeat."""
        started = record.started_at.timestamp() if record.started_at is not None else 0.0
        if kill is not None and started <= kill["at"] + OOM_CLOCK_SLACK_SECONDS:
            return (f"attempt {record.attempts}: out of memory at {kill['limit']} (consumer {owner} was killed by "
                    "the kernel); raise memory or lower memory_limit_percent")
        return f"attempt {record.attempts}: consumer {owner} lost (no heartbeat for {self.heartbeat_ttl:g}s)"

    async def _recover(self, group: str, job_id: str, owner: str, kill: dict[str, Any] | None = None) -> str:
        record = await self.store.get(job_id)
        outcome, loss = "cleaned", ""
        if record is not None and record.status is JobStatus.RUNNING and record.consumer_id == owner:
            loss = self._loss(record, owner, kill)
            errors = [*record.errors, loss]
            ran = max(0.0, (self.store.clock() - record.started_at).total_seconds()) if record.started_at else None
            if record.attempts <= record.max_retries and await self.store.requeue(job_id, errors, owner=owner):
                outcome = "requeued"
            elif await self.store.mark_failed(job_id, loss, errors=errors, owner=owner, run_seconds=ran):
                outcome = "failed"
        # the in-progress lock goes too, so any consumer of the group can pick it up again
        await self.store.release_lost(job_id, group,
                                      dequeue=outcome == "failed" or (record is not None and record.status.is_final))
        if outcome == "failed":
            await self._remove_files(job_id, result=True)  # a killed attempt may have left a temporary file
            if record is not None and record.parent_id:  # its query has failed: its siblings' work would be lost
                await self._cancel_siblings(record.parent_id)
        if outcome != "cleaned":
            log.warning("reaped job of a lost consumer", job_id=job_id, consumer_id=owner, outcome=outcome,
                        group=group, error=loss)
        return outcome

    async def _cancel_siblings(self, parent_id: str) -> None:
        """A shard failed for good: cancel the rest of its sharded query (held ones would else stay queued, and
        count against their owner's quotas, until their records expire)."""
        parent = await self.store.get(parent_id)
        outcomes = await self.store.cancel_sharded(parent_id)
        for shard, outcome in zip(parent.shard_ids if parent else [], outcomes, strict=False):
            if outcome is CancelOutcome.CANCELLED_QUEUED:  # nobody reads its staged input now
                await self._remove_files(shard, result=False)

    async def _expire(self, now: datetime) -> list[str]:
        expired = []
        for job_id in await self.store.due_deadlines(now):
            if await self._isolated(job_id, self._expire_one(job_id)):
                expired.append(job_id)
        return expired

    async def _expire_one(self, job_id: str) -> bool:
        record = await self.store.get(job_id)
        if record is None or record.status.is_final:
            await self.store.forget_deadline(job_id)
            return False
        if record.status is JobStatus.QUEUED and await self.store.mark_expired(
            job_id, "completion deadline passed while queued"
        ):
            await self.store.dequeue(job_id, record.resource_group)
            log.info("job expired in queue", job_id=job_id, group=record.resource_group)
            await self._remove_files(job_id, result=False)
            if record.parent_id:  # its query has expired: its siblings' work would be lost (as a consumer's shard)
                await self._cancel_siblings(record.parent_id)
            return True
        return False
