"""One job's life inside a consumer: claim, run under watch, record the outcome.

While the query runs in a thread, a watcher renews the job's heartbeat, publishes progress, and
interrupts DuckDB when the job is cancelled or passes its completion deadline. Failures are
retried (the record goes back to `queued` and arq re-runs the job after a backoff) until
`max_retries` is used up; errors that would fail again the same way are not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import structlog
from arq.worker import Retry

from jobqueue.engine.duckdb_run import QueryInterrupted, QueryOutOfMemory
from jobqueue.engine.execute import QueryOutcome
from jobqueue.errors import InvalidQueryError, RegistryVersionNotFound
from jobqueue.jobstore import Claim, JobStore
from jobqueue.logs import capped
from jobqueue.models import JobStatus, QueryJob
from jobqueue.outage import REDIS_UNREACHABLE, Outage, until_reachable

if TYPE_CHECKING:
    from consumer.worker import Consumer
    from jobqueue.engine.scan_cache import BlockCache
    from jobqueue.registry import Registry
    from jobqueue.settings import Settings

log = structlog.stdlib.get_logger("jobqueue.consumer")
WATCH_SECONDS = 0.5

# Deterministic: the same input fails the same way on every attempt. (QueryOutOfMemory: the engine
# already retried with fewer threads; it needs more memory.)
NOT_RETRYABLE: tuple[type[BaseException], ...] = (
    InvalidQueryError, RegistryVersionNotFound, FileNotFoundError, NotImplementedError, ValueError, QueryOutOfMemory,
    duckdb.BinderException, duckdb.ConversionException, duckdb.InvalidInputException,
    duckdb.CatalogException, duckdb.ParserException, duckdb.NotImplementedException,
)


class RunnableQuery(Protocol):
    """What a consumer does with a planned job: `PreparedQuery`, or a stand-in (tests, the overhead bench)."""

    def execute(self) -> QueryOutcome:
        """Run the query to its result; blocks, so it runs in a thread."""
        ...

    def interrupt(self) -> None:
        """Stop the running query soon; callable from any thread."""
        ...

    def progress(self) -> float:
        """Fraction done in [0, 1]."""
        ...


class PrepareQuery(Protocol):
    """Plans a job into a `RunnableQuery` (`PreparedQuery`'s constructor, unless replaced)."""

    def __call__(self, job: QueryJob, registry: Registry, settings: Settings, consumer_id: str, *,
                 scan_cache: BlockCache | None) -> RunnableQuery: ...


class Stopped(Exception):
    """The watcher interrupted the query; `status` says why (cancelled or expired)."""

    def __init__(self, status: JobStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def retry_delay(attempt: int, base: float) -> float:
    """Backoff before attempt `attempt + 1`: base, 2×base, 4×base … capped at 5 minutes."""
    return min(300.0, base * 2.0 ** max(0, attempt - 1))


def watch_wait(now: datetime, deadline: datetime | None) -> float:
    """Seconds until the watcher's next tick: WATCH_SECONDS, or less when the completion deadline comes
    sooner, so that a query is interrupted at its deadline rather than up to a tick after it."""
    if deadline is None:
        return WATCH_SECONDS
    return min(WATCH_SECONDS, max(0.0, (deadline - now).total_seconds()))


async def _tick_while_running(task: asyncio.Future[Any], tick: Callable[[], Awaitable[Any]],
                              wait: Callable[[], float] = lambda: WATCH_SECONDS) -> None:
    """Call `tick` every `wait()` seconds while `task` runs; return as soon as it is done."""
    while not task.done():
        await asyncio.wait([task], timeout=wait())
        if not task.done():
            await tick()


class JobRun:
    def __init__(self, consumer: Consumer, job: QueryJob) -> None:
        self.consumer = consumer
        self.job = job
        self.store = consumer.store
        self.stop: Stopped | None = None
        self.outage = Outage(log, "the job's heartbeat")

    async def __call__(self) -> dict[str, Any]:
        job, store = self.job, self.store
        task = asyncio.current_task()
        if task is not None:  # arq's job end waits for this run to end (`Consumer.job_finishing`)
            self.consumer.job_tasks[job.job_id] = task
        if job.completion_deadline and self.consumer.clock() >= job.completion_deadline:
            applied = await store.mark_expired(job.job_id, "completion deadline passed before the job started")
            return await self._final("expired before start", applied)
        consumer = self.consumer
        claim = await store.claim(job.job_id, consumer.consumer_id, consumer.group,
                                  consumer.settings.job_heartbeat_ttl_seconds, consumer.team_limits)
        if claim.team_running is not None:  # another consumer's claim took the team's last slot since the take
            log.info("team at its running limit; the job stays queued in its place", team=job.team,
                     team_running=claim.team_running)
            raise Retry(defer=timedelta(0))  # no new score: it keeps its fair-share place
        if not claim.claimed and claim.status == JobStatus.RUNNING.value:
            # Held by another consumer whose take's lock is gone: a lost one (its lease lapsed before the reaper
            # handed the job back) or one whose lock an outage cut short. Skipping would let arq drop the entry,
            # and the job the reaper re-queues would wait on no queue: hand it back, to be looked at again later.
            defer = consumer.settings.job_heartbeat_ttl_seconds
            log.info("job held by another consumer; handed back to its queue", retry_in_seconds=defer)
            raise Retry(defer=timedelta(seconds=defer))
        if not claim.claimed:  # over (its entry outlived it: arq drops it now), or its record is gone
            log.info("job not claimable, skipped", status=claim.status)
            return {"skipped": True}
        structlog.contextvars.bind_contextvars(attempt=claim.attempt)
        consumer.running.add(job.job_id)  # the claim set its running entry and heartbeat; released with its outcome
        if job.parent_id is not None:  # its query is running now: listed so by state (the upkeep repairs a miss)
            with contextlib.suppress(*REDIS_UNREACHABLE):
                await store.relist_parent(job.parent_id, unless=JobStatus.RUNNING)
        started = time.time()
        owner, group = self.consumer.consumer_id, self.consumer.group
        try:
            prepared = self.consumer.prepare(job, await self.consumer.registry_for(job))
            outcome = await self._watched(prepared)
        except asyncio.CancelledError:
            # hard shutdown (drain grace exceeded): arq runs the job again; hand the record back,
            # and the cut-off run does not count against max_retries
            await to_the_end(self._released(lambda: store.requeue(
                job.job_id, claim.errors, owner=owner, release=group, attempts=claim.attempt - 1
            ), hand_back=False))
            raise
        except Stopped as stop:
            await self._record_stop(stop)
            return await self._final(stop.status.value)
        except Exception as e:
            return await self._record_failure(claim, e, time.time() - started)
        await self._released(
            lambda: store.mark_succeeded(job.job_id, outcome.result_uri, outcome.summary, owner=owner, release=group)
        )
        s = outcome.summary
        log.info(
            "job succeeded", rows_out=s.rows_out, spilled_bytes=s.spilled_bytes,
            memory_limit_bytes=s.memory_limit_bytes, seconds=round(time.time() - started, 3),
        )
        await self._final("succeeded")
        return {"result_uri": outcome.result_uri}

    async def _watched(self, prepared: RunnableQuery) -> QueryOutcome:
        task = asyncio.ensure_future(asyncio.to_thread(prepared.execute))
        try:
            await _tick_while_running(task, lambda: self._watch_tick(prepared), self._watch_wait)
            try:
                return task.result()
            except QueryInterrupted:
                if self.stop is not None:
                    raise self.stop from None
                raise
        except asyncio.CancelledError:
            # Cut off (the drain grace is over): interrupt DuckDB and keep the job's heartbeat alive until
            # its thread has let go. Only then is the job handed back, by this consumer; had the heartbeat
            # lapsed first, the reaper would take the consumer for lost and count the attempt. arq cancels
            # again when it closes, so the wind-down is shielded until it is done.
            prepared.interrupt()
            wind_down = asyncio.ensure_future(self._wind_down(prepared, task))
            while not wind_down.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(wind_down)
            raise

    def _watch_wait(self) -> float:
        if self.stop is not None:  # interrupted already: only the heartbeat goes on
            return WATCH_SECONDS
        return watch_wait(self.consumer.clock(), self.job.completion_deadline)

    async def _wind_down(self, prepared: RunnableQuery, task: asyncio.Future[QueryOutcome]) -> None:
        await _tick_while_running(task, lambda: self._renew(prepared))
        with contextlib.suppress(Exception):
            task.result()

    async def _renew(self, prepared: RunnableQuery) -> bool | None:
        """Renew the job's heartbeat and publish progress; returns whether a cancel was requested (None while
        Redis is down)."""
        try:
            cancel = await self.store.renew(self.job.job_id, self.consumer.consumer_id,
                                            self.consumer.settings.job_heartbeat_ttl_seconds, prepared.progress())
            self.outage.recovered()
            return cancel
        except REDIS_UNREACHABLE as e:  # the query goes on; its outcome is recorded once Redis is back
            self.outage.failed(e)
            return None

    async def _watch_tick(self, prepared: RunnableQuery) -> None:
        job = self.job
        cancel = await self._renew(prepared)
        if self.stop is not None:
            return
        if cancel:
            self.stop = Stopped(JobStatus.CANCELLED, "cancelled while running")
        elif job.completion_deadline and self.consumer.clock() >= job.completion_deadline:
            self.stop = Stopped(JobStatus.EXPIRED, "completion deadline passed while running")
        if self.stop is not None:
            log.info("interrupting query", reason=str(self.stop))
            prepared.interrupt()

    async def _released(self, transition: Callable[[], Awaitable[bool]], hand_back: bool = True) -> bool:
        """Run a transition that also released the job's running entry and heartbeat. While Redis is
        unreachable it is tried again: the outcome of a finished query is not given up. (If the
        heartbeat lapsed meanwhile and the job was handed to another consumer, the owner check makes
        this transition a no-op.)"""
        applied = await until_reachable(transition, Outage(log, "recording the outcome"))
        self.consumer.running.discard(self.job.job_id)
        if not applied and hand_back:
            # The job is no longer ours: the manager presumed this consumer lost (its heartbeat lapsed,
            # e.g. while Redis was down) and put the record back to `queued`. arq must not finish the
            # job, which would take it off its queue: hand it back, and the record decides the next take.
            log.warning("job was handed to another consumer meanwhile; giving it back to its queue")
            raise Retry(defer=timedelta(0))
        return applied

    async def _record_stop(self, stop: Stopped) -> None:
        owner, group = self.consumer.consumer_id, self.consumer.group
        if stop.status is JobStatus.CANCELLED:
            await self._released(lambda: self.store.mark_cancelled(self.job.job_id, owner=owner, release=group))
        else:
            await self._released(lambda: self.store.mark_expired(self.job.job_id, str(stop), owner=owner,
                                                                 release=group))
        log.info("job stopped", status=stop.status.value, reason=str(stop))

    async def _record_failure(self, claim: Claim, error: Exception, ran: float) -> dict[str, Any]:
        message = capped(f"{type(error).__name__}: {error}")
        if "max_temp_directory_size" in str(error):
            message = (f"spill space exhausted in {self.consumer.settings.spill_root} (this query's share of the "
                       f"volume's free space minus JOBQUEUE_SPILL_RESERVE_BYTES): {message}")
        errors = [*claim.errors, f"attempt {claim.attempt}: {message}"]
        retryable = not isinstance(error, NOT_RETRYABLE)
        owner, group = self.consumer.consumer_id, self.consumer.group
        if retryable and claim.attempt <= self.job.max_retries:
            delay = retry_delay(claim.attempt, self.consumer.settings.retry_backoff_seconds)
            log.warning("job attempt failed; retrying", error=message, retry_in_seconds=delay)
            await self._released(lambda: self.store.requeue(self.job.job_id, errors, owner=owner, release=group))
            raise Retry(defer=timedelta(seconds=delay))
        why = "not retryable" if not retryable else f"{claim.attempt} attempt(s) used"
        log.error("job failed", error=message, why=why, exc_info=error)
        await self._released(lambda: self.store.mark_failed(self.job.job_id, message, errors=errors, owner=owner,
                                                            release=group, run_seconds=ran))
        return await self._final("failed")

    async def _final(self, outcome: str, applied: bool = True) -> dict[str, Any]:
        """The job is over (when this consumer's final transition `applied`): remove its staged input, and
        unless it succeeded its result folder (empty, or a cut-off attempt's temporary file). Inline when
        local (small), in a thread for object stores; a failed delete is left to the manager's GC."""
        if applied:
            await self.consumer.storage.discard_job_files(self.job.job_id, result=outcome != "succeeded")
        if applied and self.job.parent_id is not None:  # released once arq has taken it off its queue
            self.consumer.ended_shards[self.job.job_id] = (self.job, outcome)
        return {"outcome": outcome}


async def shard_ended(store: JobStore, job: QueryJob, outcome: str) -> None:
    """A shard of a sharded query ended, and arq has taken it off its queue (the consumer's `job_ended`; before
    that, its entry would still count as a ready job beside the sibling it releases): release a held sibling
    (`jobqueue.shard_store`). A shard that failed fails its parent, so its siblings are cancelled (their work would
    be thrown away)."""
    parent_id = job.parent_id
    assert parent_id is not None
    await until_reachable(lambda: store.release_shard(job.job_id, parent_id, job.resource_group),
                          Outage(log, "releasing a held shard"))
    if outcome in (JobStatus.FAILED.value, JobStatus.EXPIRED.value):
        log.warning("shard ended without a result; cancelling its siblings", outcome=outcome, parent=parent_id)
        await until_reachable(lambda: store.cancel_sharded(parent_id), Outage(log, "cancelling shards"))


async def to_the_end(step: Awaitable[Any]) -> None:
    """Await `step` to its end even when this task is cancelled again meanwhile (the worker's close cancels its job
    tasks once more). A hand-back must land before arq frees the job (its in-progress key) for another take: had
    `asyncio.shield` given up at the second cancel, another consumer could take the job while its record still said
    running, skip it as not claimable, and arq would drop its queue entry; the record, queued a moment later, then
    waited on no queue (seen in a loaded CI run of the drain test: 0 ready, and the group scaled to zero)."""
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        task.result()  # its own error, if any, before the cancel is passed on by the caller's `raise`
