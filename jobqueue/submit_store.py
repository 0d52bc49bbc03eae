"""Submitting jobs to Redis: `JobStore`'s half that creates records and enqueues them atomically, and keeps the
quotas' active-jobs counts (a mixin of `JobStore`, so it stays the one writer of job state).

    await store.submit(record, queue, arq_job, expires_ms, quotas=..., fair=..., wake=...)   # one SUBMIT script
    await store.active_jobs(quotas)          # what the queued-jobs quotas count now
    await store.recount_active(suspects, t)  # the quota recount lowers a count that drifted high
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from jobqueue.errors import JobStateError
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
from jobqueue.listing_index import submit_listing
from jobqueue.models import JobRecord, JobStatus, PerformanceSummary
from jobqueue.store_scripts import NAMES, SUBMIT_CREATED, SUBMIT_OVER_QUOTA

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from jobqueue.fair_share import FairShare
    from jobqueue.quotas import Quota


class DuplicateJobId(JobStateError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job id {job_id} already exists; nothing was submitted")


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


def encode_field(value: Any) -> str:
    """A record field as stored: JSON (times as ISO text, a summary as its model JSON)."""
    if isinstance(value, datetime):
        return json.dumps(value.isoformat())
    if isinstance(value, PerformanceSummary):
        return value.model_dump_json()
    return json.dumps(value)


class SubmittedJobs:
    """The submitting methods of `JobStore` (see the module's doc)."""

    redis: Redis
    keys: Keys
    ttl_seconds: int
    _submit: AsyncScript
    _recount_active: AsyncScript

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
            pairs += [name, encode_field(getattr(record, name))]
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

