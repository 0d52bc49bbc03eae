"""Job handles returned by `offline_query`: status, wait with progress, results, cancel.

`AsyncJobHandle` talks to the service through its client (`client.backend`: Redis directly, or the HTTP API; the
handles are the same over either); `JobHandle` is its blocking twin.
`AsyncLocalResult` (async client) and `LocalResult` (sync client) are what `run_asynchronously=False`
returns: a job that already succeeded (in this process, or over HTTP in the service, waited for), with the same
surface (`wait` returns its record, `cancel` raises `JobStateError` as for any finished job).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

import pyarrow as pa

from jobqueue.errors import (
    JobCancelledError,
    JobFailedError,
    JobLostError,
    JobStateError,
    RedisUnavailableError,
    ResultGoneError,
)
from jobqueue.logs import get_logger
from jobqueue.models import JobRecord, JobStatus, PerformanceSummary, WaitReason
from jobqueue.outage import Outage
from jobqueue.plan import ROW_COLUMN
from jobqueue.progress import progress_bar, show_by_default
from jobqueue.sharding import merge_results
from jobqueue.storage import Storage
from jobqueue.waiting import WaitNotices

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    from jobqueue.client import AsyncJobQueueClient
    from jobqueue.sync import LoopThread

_POLL_MIN, _POLL_MAX = 0.05, 0.5  # without a finish subscription (Redis unreachable): backoff
PROGRESS_SECONDS = 0.5  # how often a progress bar is redrawn
log = get_logger("jobqueue.sdk")


async def _sleep_before(deadline: float | None, seconds: float) -> None:
    """Sleep `seconds`, but not past `deadline` (a `time.monotonic()` value; None: no deadline)."""
    await asyncio.sleep(seconds if deadline is None else max(0.0, min(seconds, deadline - time.monotonic())))


def _check_final(record: JobRecord) -> JobRecord:
    if record.status in (JobStatus.FAILED, JobStatus.EXPIRED):
        raise JobFailedError(record)
    if record.status is JobStatus.CANCELLED:
        raise JobCancelledError(f"job {record.job_id} was cancelled")
    return record


class AsyncJobHandle:
    def __init__(self, job_id: str, client: AsyncJobQueueClient) -> None:
        self.id = job_id
        self._client = client
        self._record: JobRecord | None = None
        self._files: tuple[pafs.FileSystem, list[str]] | None = None  # `to_dataset()`'s, fetched once

    def __repr__(self) -> str:
        status = self._record.status.value if self._record else "?"
        return f"<AsyncJobHandle {self.id} {status}>"

    async def record(self) -> JobRecord:
        self._record = await self._client.get_job(self.id)
        self.id = self._record.job_id  # `client.job(prefix)`: the full id from the first look-up on
        return self._record

    async def status(self) -> JobStatus:
        return (await self.record()).status

    @property
    def performance_summary(self) -> PerformanceSummary | None:
        """The summary from the last observed record (set once the job has succeeded): a `PerformanceSummary`,
        a pydantic model, not a dict (`.model_dump()` gives one); each field documents itself."""
        return self._record.summary if self._record else None

    async def wait(self, timeout: float | None = None, show_progress: bool | None = None) -> JobRecord:
        """Block until the job is final; raise `JobFailedError` / `JobCancelledError` if it did not succeed.

        `show_progress` (default: when stderr is a terminal, and in a notebook) draws a progress bar: rich's in a
        terminal, tqdm's in a Jupyter kernel (a widget with ipywidgets installed, else a text bar). While the job
        is queued, a line says why it waits when that needs telling (above the bar, or logged without one), and a
        timeout's `TimeoutError` says it too (`JobRecord.wait_reason`).
        """
        if show_progress is None:
            show_progress = show_by_default()
        deadline = None if timeout is None else time.monotonic() + timeout
        if not show_progress:
            return _check_final(await self._poll(deadline, None, lambda reason: log.info(
                "job waits", job_id=self.id, reason=reason.code.value, detail=reason.message)))
        with progress_bar(self.id) as bar:
            return _check_final(await self._poll(
                deadline, bar.update, lambda reason: bar.tell(f"job {self.id[:8]} waits: {reason.message}")))

    async def _poll(self, deadline: float | None, on_update: Callable[[JobRecord], None] | None,
                    tell: Callable[[WaitReason], None]) -> JobRecord:
        """Read the record until it is final, blocking in between on the job's finish event (`FinishWatch`): read
        again when it comes, when a progress bar is due a redraw (every `PROGRESS_SECONDS`), and at the latest every
        JOBQUEUE_WAIT_POLL_SECONDS (a missed event). Without a subscription (Redis unreachable) it polls with backoff.
        `tell` why the job waits (`WaitNotices`: when that needs telling). A lost Redis connection is waited out
        (until the deadline): the job lives in Redis and in the consumers, not in this process, so it goes on
        meanwhile. Except when that Redis is the embedded server of `jobqueue up`: gone, it took the job with it
        (`JobLostError`)."""
        delay, outage, notices = _POLL_MIN, Outage(log, "wait()", every=10.0), WaitNotices()
        watch = self._client.backend.finish_watcher(self.id)
        every = self._client.settings.wait_poll_seconds
        if on_update is not None:
            every = min(every, PROGRESS_SECONDS)
        try:
            while True:
                await watch.subscribe()  # before the read: a finish after it is then not missed
                try:
                    record = await self.record()
                except RedisUnavailableError as e:
                    if self._client.on_embedded_server:  # nothing to wait for: that server kept the job in memory
                        raise JobLostError(
                            f"job {self.id} is lost: the embedded server of `jobqueue up` ({self._client.server}) "
                            "is gone, and it keeps no jobs once it stops. Start `jobqueue up` again and submit the "
                            "query again (call `offline_query` once more)"
                        ) from e
                    if deadline is not None and time.monotonic() >= deadline:
                        raise
                    await watch.close()
                    await _sleep_before(deadline, outage.failed(e, job_id=self.id))
                    continue
                outage.recovered(job_id=self.id)
                if on_update:
                    on_update(record)
                if record.status.is_final:
                    return record
                reason = record.wait_reason
                if notices.due(reason, time.monotonic()) and reason is not None:
                    tell(reason)
                if deadline is not None and time.monotonic() >= deadline:
                    why = f": {reason.message}" if reason else ""
                    raise TimeoutError(f"job {self.id} is still {record.status.value} after the timeout{why}")
                if watch.subscribed:
                    await watch.wait(every if deadline is None else max(0.0, min(every, deadline - time.monotonic())))
                else:
                    await _sleep_before(deadline, delay)
                    delay = min(delay * 1.5, _POLL_MAX)
        finally:
            await asyncio.shield(watch.close())

    async def to_arrow(self) -> pa.Table:
        # a final record never changes again: the one `wait()` returned saves reading it once more
        record = self._record if self._record is not None and self._record.status.is_final else await self.record()
        if record.status is not JobStatus.SUCCEEDED or not (record.result_uri or record.shard_ids):
            _check_final(record)
            raise JobStateError(f"job {self.id} is {record.status.value}; wait() for it before reading results")
        if not record.shard_ids:
            return await self._client.read_result(record)
        shards = await self._shards()
        tables = [await self._client.read_result(s) for s in shards]
        return await asyncio.to_thread(merge_results, tables, ROW_COLUMN)

    async def _shards(self) -> list[JobRecord]:
        """A succeeded sharded query's shards' records, in shard order."""
        record = self._record if self._record is not None and self._record.status.is_final else await self.record()
        if record.status is not JobStatus.SUCCEEDED:
            _check_final(record)
            raise JobStateError(f"job {self.id} is {record.status.value}; wait() for it before reading results")
        return list(await asyncio.gather(*(self._client.get_job(s) for s in record.shard_ids)))

    async def _result_records(self) -> list[JobRecord]:
        """The records of the result's files: the job's, or a sharded query's shards' (in shard order)."""
        record = self._record if self._record is not None and self._record.status.is_final else await self.record()
        if not record.shard_ids:
            if record.status is not JobStatus.SUCCEEDED:
                _check_final(record)
                raise JobStateError(f"job {self.id} is {record.status.value}; wait() for it before reading results")
            return [record] if record.result_uri else []
        return [s for s in await self._shards() if s.result_uri]

    async def result_uris(self) -> list[str]:
        """Where the result is: one Parquet file per shard of a sharded query (each with `__row__`, the input
        position of its rows), else the one file. Direct: URIs in the service's storage; over HTTP: the API's
        download of each (`GET .../v1/jobs/{id}/result`, with the token). For results too large for memory: read
        them with `to_dataset()`, or any Parquet reader."""
        return [self._client.backend.result_location(r) for r in await self._result_records()]

    async def to_dataset(self) -> pads.Dataset:
        """The result as a `pyarrow.dataset.Dataset` over its files (`result_uris()`), read lazily: scan, filter
        or stream batches without loading it whole. A sharded query's rows are in shard order, with `__row__`
        (sort by it for input order). Direct: the files in the service's storage. Over HTTP: each file downloaded
        once (streamed to disk, from its presigned URL when the service stores on S3) into a temporary folder of
        the client, removed when the client closes."""
        import pyarrow.dataset as pads

        if self._files is None:
            self._files = await self._client.backend.result_files(await self._result_records())
        fs, paths = self._files
        return pads.dataset(paths, filesystem=fs, format="parquet")

    async def to_pandas(self) -> pd.DataFrame:
        return _to_pandas(await self.to_arrow())

    async def to_polars(self) -> pl.DataFrame:
        """The result as a polars DataFrame (needs the `jobqueue[polars]` extra)."""
        return _to_polars(await self.to_arrow())

    async def cancel(self, wait: float | None = 30.0) -> JobRecord:
        """Cancel (see `AsyncJobQueueClient.cancel`); returns the record afterwards."""
        self._record = await self._client.cancel(self.id, wait)
        self.id = self._record.job_id
        return self._record


class AsyncLocalResult:
    """The job of `run_asynchronously=False`: it has already succeeded, so `wait` returns its record at once and
    `cancel` raises `JobStateError`. In the direct mode it ran in this process and its record lives here, not in
    Redis (`storage` reads its result); over HTTP the service ran it and `fetch` downloads its result."""

    def __init__(self, record: JobRecord, storage: Storage | None = None, *,
                 fetch: Callable[[JobRecord], Awaitable[pa.Table]] | None = None) -> None:
        if (storage is None) == (fetch is None):
            raise ValueError("give one of storage (an in-process run) and fetch (a job the service ran)")
        self.id = record.job_id
        self._record = record
        self._storage = storage
        self._fetch = fetch

    def __repr__(self) -> str:
        return f"<AsyncLocalResult {self.id} {self._record.status.value}>"

    async def record(self) -> JobRecord:
        return self._record

    async def status(self) -> JobStatus:
        return self._record.status

    @property
    def performance_summary(self) -> PerformanceSummary | None:
        return self._record.summary

    async def wait(self, timeout: float | None = None, show_progress: bool | None = None) -> JobRecord:
        return self._record

    async def to_arrow(self) -> pa.Table:
        if self._fetch is not None:
            return await self._fetch(self._record)
        assert self._storage is not None and self._record.result_uri is not None  # made once its result is written
        return await asyncio.to_thread(read_result, self._storage, self.id, self._record.result_uri)

    async def to_pandas(self) -> pd.DataFrame:
        return _to_pandas(await self.to_arrow())

    async def to_polars(self) -> pl.DataFrame:
        """The result as a polars DataFrame (needs the `jobqueue[polars]` extra)."""
        return _to_polars(await self.to_arrow())

    async def cancel(self, wait: float | None = 30.0) -> JobRecord:
        where = "in-process" if self._fetch is None else "to its end before offline_query returned"
        raise JobStateError(f"job {self.id} ran {where} and has already finished")


class JobHandle:
    """Blocking twin of `AsyncJobHandle` (and, as `LocalResult`, of `AsyncLocalResult`)."""

    def __init__(self, handle: AsyncJobHandle | AsyncLocalResult, loop: LoopThread) -> None:
        self._handle = handle
        self._loop = loop

    @property
    def id(self) -> str:
        return self._handle.id

    def __repr__(self) -> str:
        return repr(self._handle).replace("<Async", "<", 1)

    def record(self) -> JobRecord:
        return self._loop.run(self._handle.record())

    def status(self) -> JobStatus:
        return self._loop.run(self._handle.status())

    @property
    def performance_summary(self) -> PerformanceSummary | None:
        return self._handle.performance_summary

    def wait(self, timeout: float | None = None, show_progress: bool | None = None) -> JobRecord:
        """See `AsyncJobHandle.wait`. Ctrl-C stops the polling and the progress bar, says how to cancel the job
        (which goes on without this process), and raises `WaitInterrupted` (a `KeyboardInterrupt`)."""
        try:
            return self._loop.run(self._handle.wait(timeout, show_progress))
        except KeyboardInterrupt:
            raise WaitInterrupted(self.id, self._handle._record) from None

    def to_arrow(self) -> pa.Table:
        return self._loop.run(self._handle.to_arrow())

    def to_pandas(self) -> pd.DataFrame:
        return _to_pandas(self.to_arrow())

    def to_polars(self) -> pl.DataFrame:
        """The result as a polars DataFrame (needs the `jobqueue[polars]` extra)."""
        return _to_polars(self.to_arrow())

    def cancel(self, wait: float | None = 30.0) -> JobRecord:
        return self._loop.run(self._handle.cancel(wait))

    def result_uris(self) -> list[str]:
        """See `AsyncJobHandle.result_uris`."""
        assert isinstance(self._handle, AsyncJobHandle), "an in-process result has one file: record().result_uri"
        return self._loop.run(self._handle.result_uris())

    def to_dataset(self) -> pads.Dataset:
        """See `AsyncJobHandle.to_dataset`."""
        assert isinstance(self._handle, AsyncJobHandle), "an in-process result has one file: to_arrow()"
        return self._loop.run(self._handle.to_dataset())


class LocalResult(JobHandle):
    """Blocking twin of `AsyncLocalResult`: what the sync client's `run_asynchronously=False` returns."""

    def __init__(self, result: AsyncLocalResult, loop: LoopThread) -> None:
        super().__init__(result, loop)


class WaitInterrupted(KeyboardInterrupt):
    """Ctrl-C during `JobHandle.wait()`. Its message is printed at once (a notebook shows it too); if nothing
    catches it, the script ends without a traceback, as killed by SIGINT."""

    def __init__(self, job_id: str, record: JobRecord | None) -> None:
        state = record.status.value if record else "running"
        message = (f"job {job_id} is still {state}; cancel it with `jobqueue cancel {job_id}` or `job.cancel()`")
        super().__init__(message)
        print(message, file=sys.stderr, flush=True)
        _quiet_uncaught_wait_interrupted()


def _quiet_uncaught_wait_interrupted() -> None:
    """Leave out the traceback of an uncaught `WaitInterrupted` (its message is already printed); every other
    exception goes to the hook that was there before."""
    previous = sys.excepthook
    if getattr(previous, "_jobqueue_wait_interrupted", False):
        return

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if not isinstance(value, WaitInterrupted):
            previous(kind, value, tb)

    hook._jobqueue_wait_interrupted = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    frame: pd.DataFrame = table.to_pandas()
    return frame


def _to_polars(table: pa.Table) -> pl.DataFrame:
    try:
        import polars as pl
    except ImportError as e:
        raise ImportError("to_polars() needs polars: install the polars extra, `pip install 'jobqueue[polars]'` "
                          "(or use to_pandas() / to_arrow())") from e
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)  # a table gives a frame (a lone array would give a Series)
    return frame


def read_result(storage: Storage, job_id: str, result_uri: str) -> pa.Table:
    """A succeeded job's result; `ResultGoneError` when retention (or anyone) has removed it."""
    try:
        return storage.read_table(result_uri)
    except FileNotFoundError as e:
        ttl = storage.settings.result_ttl
        raise ResultGoneError(
            f"the result of job {job_id} is gone ({result_uri}): results are kept for "
            f"JOBQUEUE_RESULT_TTL_SECONDS ({ttl} s) after their job finished; run the query again, or raise "
            "that setting for the results you need longer"
        ) from e
