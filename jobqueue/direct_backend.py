"""`DirectBackend`: the SDK's surface straight on Redis and storage (`JobQueueBackend`). "Trusted": whoever holds
the Redis URL may read and change every job, so this mode is for code inside the cluster (the API, the manager's
schedules) and for tests; users go through the API (`jobqueue.http_backend`). The API's routes call the same
functions, so both modes answer alike."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.fs as pafs

from jobqueue.api.listing import all_matching, cancellable_queries, find_page
from jobqueue.api.wire import (
    MAX_SCHEDULE_RUNS,
    CancelFilter,
    CancelManyResult,
    GroupStatus,
    RegistryApplied,
    RegistryHistory,
    RegistryVersionBody,
    ScheduleAction,
    ScheduleInfo,
    ScheduleList,
    ScheduleRun,
    ScheduleRuns,
)
from jobqueue.attribution import check_attribution, default_owner, new_correlation_id
from jobqueue.backend import QueryRequest
from jobqueue.direct_submit import submit_checked
from jobqueue.errors import (
    AmbiguousJobIdError,
    InvalidQueryError,
    JobNotFoundError,
    JobQueueError,
    JobStateError,
    RegistryVersionNotFound,
)
from jobqueue.finish_watch import FinishWatch
from jobqueue.group_status import group_rows
from jobqueue.job_filter import JobFilter
from jobqueue.jobstore import CancelOutcome
from jobqueue.keys import TRUE, ScheduleField
from jobqueue.listing_plan import ListingQuery, Position
from jobqueue.models import JobRecord, JobStatus
from jobqueue.registry import Registry
from jobqueue.schedule_control import (
    published_schedules,
    request_run,
    run_ids,
    schedule_state,
    set_paused,
)
from jobqueue.schedules import next_due
from jobqueue.wait_observe import wait_reason

if TYPE_CHECKING:
    from jobqueue.client import AsyncJobQueueClient

_GLOB_SPECIAL = re.compile(r"[\\*?\[\]]")  # escaped in a ZSCAN MATCH pattern
LIST_SCAN_LIMIT = 100_000  # a direct listing reads this many records at most to fill itself
SCHEDULE_ACTIONS = {"run": "the manager submits a run at its next tick", "pause": "no runs until resumed",
                    "resume": "runs again from the next due time"}


class DirectBackend:
    def __init__(self, client: AsyncJobQueueClient) -> None:
        self.client = client

    @property
    def server(self) -> str:
        return self.client.server

    @property
    def on_embedded_server(self) -> bool:
        return self.client.on_embedded_server

    async def submit(self, query: QueryRequest) -> str:
        return (await self.submit_record(query)).job_id

    async def submit_record(self, query: QueryRequest) -> JobRecord:
        """`submit`, returning the record as written (the API answers with it: no read back)."""
        client = self.client
        attribution = check_attribution(
            query.owner if query.owner is not None else default_owner(),
            query.team if query.team is not None else client.settings.team or None, query.tags, query.query_name,
            query.correlation_id if query.correlation_id is not None else new_correlation_id())
        return await submit_checked(client, query, attribution)

    def finish_watcher(self, job_id: str) -> FinishWatch:
        return FinishWatch(self.client.redis, self.client.keys.job_finished(job_id), job_id)

    async def resolve_job_id(self, job_id: str) -> str:
        """The full id of the job `job_id` names: itself, or the one job whose id starts with it (the progress
        bar shows 8 characters). `AmbiguousJobIdError` lists the jobs a shared prefix matches;
        `JobNotFoundError` when none does."""
        client = self.client
        redis, keys = client.redis, client.keys
        with client.reaching_redis(f"job {job_id} could not be looked up"):
            if job_id and await redis.exists(keys.job(job_id)):
                return job_id
            pattern = _GLOB_SPECIAL.sub(r"\\\g<0>", job_id) + "*"
            found: list[str] = sorted({m.decode() async for m, _ in redis.zscan_iter(keys.jobs_index,
                                                                                    match=pattern)})
            if len(found) > 1:  # the index outlives expired records: only jobs that still exist count
                alive = await asyncio.gather(*(redis.exists(keys.job(i)) for i in found))
                found = [i for i, a in zip(found, alive, strict=True) if a]
        if not job_id or not found:
            raise JobNotFoundError(f"no job {job_id!r} in environment {client.settings.environment!r}")
        if len(found) > 1:
            raise AmbiguousJobIdError(job_id, found)
        return found[0]

    async def get_job(self, job_id: str) -> JobRecord:
        client = self.client
        job_id = await self.resolve_job_id(job_id)
        with client.reaching_redis(f"job {job_id}'s status is unknown; it goes on without this client"):
            record = await client.store.get(job_id)
            if record is not None and record.status is JobStatus.QUEUED:  # say why it waits
                record = record.model_copy(update={"wait_reason": await wait_reason(client.redis, client.settings,
                                                                                    record, time.time())})
        if record is None:
            raise JobNotFoundError(f"no job {job_id!r} in environment {client.settings.environment!r}")
        return record

    async def cancel(self, job_id: str, wait: float | None) -> JobRecord:
        from jobqueue.handles import AsyncJobHandle

        client = self.client
        job_id = await self.resolve_job_id(job_id)
        with client.reaching_redis(f"job {job_id} was not cancelled"):
            before = await client.store.get(job_id)
            if before is not None and before.shard_ids:
                return await self._cancel_sharded(before, wait)
            if before is not None and before.parent_id and not before.status.is_final:
                # a shard: its query cannot succeed without it, and its held siblings would wait for a release
                parent = await client.store.get(before.parent_id)
                if parent is not None:
                    await self._cancel_sharded(parent, wait)
                    return await self.get_job(job_id)
            result = await client.store.request_cancel(job_id)
        if result is CancelOutcome.NO_JOB:
            raise JobNotFoundError(f"no job {job_id!r} in environment {client.settings.environment!r}")
        record = await self.get_job(job_id)
        if result is CancelOutcome.CANCELLED_QUEUED:  # the record, its queue entry and arq job changed in one script
            await client.storage.discard_job_files(job_id)  # no consumer reads it now
        elif result is CancelOutcome.STOP_REQUESTED and wait:
            with contextlib.suppress(TimeoutError, JobQueueError):
                record = await AsyncJobHandle(job_id, client).wait(timeout=wait, show_progress=False)
            record = await self.get_job(job_id)
        elif result is CancelOutcome.ALREADY_FINAL and record.status is not JobStatus.CANCELLED:
            raise JobStateError(f"job {job_id} is {record.status.value}; it can no longer be cancelled")
        return record

    async def _cancel_sharded(self, parent: JobRecord, wait: float | None) -> JobRecord:
        """Cancel every unfinished shard of a sharded query (`JobStore.cancel_sharded`), and wait up to `wait`
        seconds for the running ones to stop."""
        from jobqueue.handles import AsyncJobHandle

        client = self.client
        if parent.status.is_final and parent.status is not JobStatus.CANCELLED:
            raise JobStateError(f"job {parent.job_id} is {parent.status.value}; it can no longer be cancelled")
        outcomes = await self._cancel_shards_of(parent)
        if wait and CancelOutcome.STOP_REQUESTED in outcomes:
            with contextlib.suppress(TimeoutError, JobQueueError):
                await AsyncJobHandle(parent.job_id, client).wait(timeout=wait, show_progress=False)
        return await self.get_job(parent.job_id)

    async def _cancel_shards_of(self, parent: JobRecord) -> list[CancelOutcome]:
        client = self.client
        outcomes = await client.store.cancel_sharded(parent.job_id)
        for shard, outcome in zip(parent.shard_ids, outcomes, strict=True):
            if outcome is CancelOutcome.CANCELLED_QUEUED:
                await client.storage.discard_job_files(shard)
        return outcomes

    async def read_result(self, record: JobRecord) -> pa.Table:
        from jobqueue.handles import read_result

        assert record.result_uri is not None
        return await asyncio.to_thread(read_result, self.client.storage, record.job_id, record.result_uri)

    def result_location(self, record: JobRecord) -> str:
        assert record.result_uri is not None
        return record.result_uri

    async def result_files(self, records: Sequence[JobRecord]) -> tuple[pafs.FileSystem, list[str]]:
        """The result files where they are, in the service's storage: nothing downloaded."""
        storage = self.client.storage
        fs = storage.resolve(self.result_location(records[0]))[0]
        return fs, [storage.resolve(self.result_location(r))[1] for r in records]

    async def jobs(self, wanted: JobFilter, limit: int, submitted_after: datetime | None,
                   submitted_before: datetime | None, visible: Callable[[JobRecord], bool] = lambda r: True,
                   cursor: str | None = None, scan_limit: int = LIST_SCAN_LIMIT) -> list[JobRecord]:
        return (await self.page(wanted, limit, submitted_after, submitted_before, visible, cursor, scan_limit))[0]

    async def page(self, wanted: JobFilter, limit: int, submitted_after: datetime | None,
                   submitted_before: datetime | None, visible: Callable[[JobRecord], bool] = lambda r: True,
                   cursor: str | None = None, scan_limit: int = LIST_SCAN_LIMIT) -> tuple[list[JobRecord], str | None]:
        """Newest first, every condition of `wanted` and `visible`; and the cursor of the next page (the API's)."""
        client = self.client
        query = ListingQuery(wanted=wanted, limit=limit, after=Position.decode(cursor) if cursor else None,
                             submitted_after_ms=_ms(submitted_after), submitted_before_ms=_ms(submitted_before))
        with client.reaching_redis("the jobs could not be listed"):
            return await find_page(client.store, client.redis, client.keys, query, visible, scan_limit)

    async def cancel_many(self, wanted: CancelFilter, may_cancel: Callable[[JobRecord], bool] = lambda r: True,
                          only_owner: str | None = None, also_team: str | None = None) -> CancelManyResult:
        """Cancel the queued and running jobs matching every condition (and `may_cancel`; `only_owner`, with
        `also_team`, narrows the index reads to one owner's jobs and that team's, as the policy of a `user` does)."""
        client = self.client
        query = ListingQuery(wanted=JobFilter(group=wanted.resource_group, state=wanted.state, owner=wanted.owner,
                                              team=wanted.team, query_name=wanted.query_name, tags=wanted.tags or {}),
                             submitted_after_ms=_ms(wanted.submitted_after),
                             submitted_before_ms=_ms(wanted.submitted_before), only_owner=only_owner,
                             also_team=also_team)
        cancelled: list[str] = []
        with client.reaching_redis("jobs were not cancelled"):
            records = [r for q in cancellable_queries(query)
                       async for r in all_matching(client.store, client.redis, client.keys, q, may_cancel)]
            for record in records:
                if record.shard_ids:  # a sharded query: every shard (the parent is on no queue)
                    if any(o in (CancelOutcome.CANCELLED_QUEUED, CancelOutcome.STOP_REQUESTED)
                           for o in await self._cancel_shards_of(record)):
                        cancelled.append(record.job_id)
                    continue
                outcome = await client.store.request_cancel(record.job_id)
                if outcome is CancelOutcome.CANCELLED_QUEUED:
                    await client.storage.discard_job_files(record.job_id)
                if outcome in (CancelOutcome.CANCELLED_QUEUED, CancelOutcome.STOP_REQUESTED):
                    cancelled.append(record.job_id)
        return CancelManyResult(cancelled=len(cancelled), job_ids=cancelled)

    async def groups(self) -> list[GroupStatus]:
        client = self.client
        with client.reaching_redis("the status is unknown"):
            rows = await group_rows(client.redis, client.keys, client.settings)
        return [GroupStatus.model_validate(r) for r in rows]

    async def schedules(self) -> ScheduleList:
        redis, keys = self.client.redis, self.client.keys
        with self.client.reaching_redis("the schedules are unknown"):
            published = await published_schedules(redis, keys)
            now, out = datetime.now(UTC), []
            for name, sq in sorted(published.definitions.items()):
                state = await schedule_state(redis, keys, name)
                out.append(ScheduleInfo(
                    name=name, schedule=sq.schedule, timezone=sq.timezone, resource_group=sq.resource_group,
                    enabled=sq.enabled, paused=state.get(ScheduleField.PAUSED) == TRUE, next_due=next_due(sq, now),
                    last_job=state.get(ScheduleField.LAST_JOB), last_due=state.get(ScheduleField.LAST_DUE),
                    last_reason=state.get(ScheduleField.LAST_REASON), definition=sq.model_dump(mode="json")))
        return ScheduleList(schedules=out, errors=published.errors)

    async def schedule_action(self, name: str, action: str) -> ScheduleAction:
        """Run now, pause or resume; `UnknownScheduleError` names the known schedules."""
        if action not in SCHEDULE_ACTIONS:
            raise InvalidQueryError("action", f"must be one of {', '.join(SCHEDULE_ACTIONS)}, got {action!r}")
        redis, keys = self.client.redis, self.client.keys
        with self.client.reaching_redis(f"schedule {name} was not changed"):
            if action == "run":
                await request_run(redis, keys, name)
            else:
                await set_paused(redis, keys, name, paused=action == "pause")
        return ScheduleAction(name=name, action=action, detail=SCHEDULE_ACTIONS[action])

    async def schedule_runs(self, name: str, limit: int) -> ScheduleRuns:
        """The last `limit` runs of a schedule, newest first; `UnknownScheduleError` names the known schedules."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_SCHEDULE_RUNS:
            raise InvalidQueryError("limit", f"must be a whole number from 1 to {MAX_SCHEDULE_RUNS}, got {limit!r}")
        client = self.client
        with client.reaching_redis(f"the runs of schedule {name} are unknown"):
            ids = await run_ids(client.redis, client.keys, name, limit)
            records = [await client.store.get(job_id) for job_id in ids]
        return ScheduleRuns(name=name, runs=[_run(job_id, r) for job_id, r in zip(ids, records, strict=True)])

    async def registry_current(self) -> RegistryVersionBody:
        current = await self.client.registries.current()
        if current is None:
            raise RegistryVersionNotFound("no registry version is stored yet: an admin applies one (`jobqueue "
                                          "registry apply <file>`, or `jobqueue up` with JOBQUEUE_REGISTRY_PATH)")
        return RegistryVersionBody.of(current, current.id)

    async def registry_history(self) -> RegistryHistory:
        store = self.client.registries
        versions, current = await store.history(), await store.current_id()
        return RegistryHistory(current=current, versions=[RegistryVersionBody.of(v, current, document=False)
                                                          for v in versions])

    async def registry_version(self, ref: str) -> RegistryVersionBody:
        store = self.client.registries
        return RegistryVersionBody.of(await store.version(ref), await store.current_id())

    async def apply_registry(self, registry: Registry, applied_by: str | None) -> RegistryApplied:
        applied = await self.client.registries.apply(registry, applied_by=applied_by)
        return RegistryApplied(created=applied.created, version=RegistryVersionBody.of(applied.version,
                                                                                       applied.version.id))

    async def aclose(self) -> None:
        await self.client.close_connections()


def _run(job_id: str, r: JobRecord | None) -> ScheduleRun:
    if r is None:  # the record expired (JOBQUEUE_JOB_TTL_SECONDS); the run's id is all that is left
        return ScheduleRun(job_id=job_id, status=None, submitted_at=None, started_at=None, finished_at=None,
                           duration_seconds=None, spilled_bytes=None)
    took = (r.finished_at - r.started_at).total_seconds() if r.finished_at and r.started_at else None
    return ScheduleRun(job_id=job_id, status=r.status, submitted_at=r.submitted_at, started_at=r.started_at,
                       finished_at=r.finished_at, duration_seconds=took,
                       spilled_bytes=r.summary.spilled_bytes if r.summary else None)


def _ms(when: datetime | None) -> float | None:
    return when.timestamp() * 1000 if when is not None else None
