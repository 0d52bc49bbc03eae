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
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb
import structlog
from arq.worker import Retry

from consumer.engine import QueryInterrupted
from consumer.execute import PreparedQuery, QueryOutcome
from jobqueue.errors import InvalidQueryError
from jobqueue.models import JobRecord, JobStatus, QueryJob

if TYPE_CHECKING:
    from consumer.worker import Consumer

log = structlog.stdlib.get_logger("jobqueue.consumer")
WATCH_SECONDS = 0.5

# Deterministic: the same input fails the same way on every attempt.
NOT_RETRYABLE: tuple[type[BaseException], ...] = (
    InvalidQueryError, FileNotFoundError, NotImplementedError, ValueError,
    duckdb.BinderException, duckdb.ConversionException, duckdb.InvalidInputException,
    duckdb.CatalogException, duckdb.ParserException, duckdb.NotImplementedException,
)


class Stopped(Exception):
    """The watcher interrupted the query; `status` says why (cancelled or expired)."""

    def __init__(self, status: JobStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def retry_delay(attempt: int, base: float) -> float:
    """Backoff before attempt `attempt + 1`: base, 2×base, 4×base … capped at 5 minutes."""
    return min(300.0, base * 2 ** max(0, attempt - 1))


class JobRun:
    def __init__(self, consumer: Consumer, job: QueryJob) -> None:
        self.consumer = consumer
        self.job = job
        self.store = consumer.store
        self.stop: Stopped | None = None

    async def __call__(self) -> dict[str, Any]:
        job, store = self.job, self.store
        if job.completion_deadline and datetime.now(UTC) >= job.completion_deadline:
            await store.mark_expired(job.job_id, "completion deadline passed before the job started")
            return await self._final("expired before start")
        if not await store.claim(job.job_id, self.consumer.consumer_id):
            record = await store.get(job.job_id)
            log.info("job not claimable, skipped", status=record.status.value if record else None)
            return {"skipped": True}
        record = await store.get(job.job_id)
        assert record is not None
        structlog.contextvars.bind_contextvars(attempt=record.attempts)
        started = time.time()
        try:
            prepared = PreparedQuery(job, self.consumer.registry, self.consumer.settings, self.consumer.consumer_id)
            outcome = await self._watched(prepared)
        except asyncio.CancelledError:
            # hard shutdown (drain grace exceeded): arq runs the job again; hand the record back
            await asyncio.shield(store.requeue(job.job_id, record.errors, owner=self.consumer.consumer_id))
            raise
        except Stopped as stop:
            await self._record_stop(stop)
            return await self._final(stop.status.value)
        except Exception as e:
            return await self._record_failure(record, e)
        await store.mark_succeeded(job.job_id, outcome.result_uri, outcome.summary, owner=self.consumer.consumer_id)
        s = outcome.summary
        log.info(
            "job succeeded", rows_out=s.rows_out, spilled_bytes=s.spilled_bytes,
            memory_limit_bytes=s.memory_limit_bytes, seconds=round(time.time() - started, 3),
        )
        await self._final("succeeded")
        return {"result_uri": outcome.result_uri}

    async def _watched(self, prepared: PreparedQuery) -> QueryOutcome:
        task = asyncio.ensure_future(asyncio.to_thread(prepared.execute))
        try:
            while not task.done():
                await asyncio.wait([task], timeout=WATCH_SECONDS)
                if not task.done():
                    await self._watch_tick(prepared)
            try:
                return task.result()
            except QueryInterrupted:
                if self.stop is not None:
                    raise self.stop from None
                raise
        except asyncio.CancelledError:
            prepared.run.interrupt()
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
            raise

    async def _watch_tick(self, prepared: PreparedQuery) -> None:
        job, keys, redis = self.job, self.consumer.keys, self.consumer.redis
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.heartbeat(job.job_id), self.consumer.consumer_id,
                     ex=max(1, int(self.consumer.settings.job_heartbeat_ttl_seconds)))
            pipe.hset(keys.job(job.job_id), "progress", str(round(prepared.run.progress(), 4)))
            pipe.hget(keys.job(job.job_id), "cancel_requested")
            _, _, cancel = await pipe.execute()
        if self.stop is not None:
            return
        if cancel == b"true":
            self.stop = Stopped(JobStatus.CANCELLED, "cancelled while running")
        elif job.completion_deadline and datetime.now(UTC) >= job.completion_deadline:
            self.stop = Stopped(JobStatus.EXPIRED, "completion deadline passed while running")
        if self.stop is not None:
            log.info("interrupting query", reason=str(self.stop))
            prepared.run.interrupt()

    async def _record_stop(self, stop: Stopped) -> None:
        owner = self.consumer.consumer_id
        if stop.status is JobStatus.CANCELLED:
            await self.store.mark_cancelled(self.job.job_id, owner=owner)
        else:
            await self.store.transition(
                self.job.job_id, [JobStatus.RUNNING], JobStatus.EXPIRED, owner=owner,
                finished_at=datetime.now(UTC), error=str(stop),
            )
        log.info("job stopped", status=stop.status.value, reason=str(stop))

    async def _record_failure(self, record: JobRecord, error: Exception) -> dict[str, Any]:
        message = f"{type(error).__name__}: {error}"
        if "max_temp_directory_size" in str(error):
            message = (f"spill space exhausted in {self.consumer.settings.spill_root} (free space minus "
                       f"JOBQUEUE_SPILL_RESERVE_BYTES): {message}")
        errors = [*record.errors, f"attempt {record.attempts}: {message}"]
        retryable = not isinstance(error, NOT_RETRYABLE)
        owner = self.consumer.consumer_id
        if retryable and record.attempts <= self.job.max_retries:
            delay = retry_delay(record.attempts, self.consumer.settings.retry_backoff_seconds)
            log.warning("job attempt failed; retrying", error=message, retry_in_seconds=delay)
            await self.store.requeue(self.job.job_id, errors, owner=owner)
            raise Retry(defer=timedelta(seconds=delay))
        why = "not retryable" if not retryable else f"{record.attempts} attempt(s) used"
        log.error("job failed", error=message, why=why, exc_info=error)
        await self.store.mark_failed(self.job.job_id, message, errors=errors, owner=owner)
        return await self._final("failed")

    async def _final(self, outcome: str) -> dict[str, Any]:
        await asyncio.to_thread(self.consumer.storage.delete_job_dir, self.consumer.settings.staging, self.job.job_id)
        return {"outcome": outcome}
