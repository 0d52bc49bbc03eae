"""`offline_query(run_asynchronously=False)`. In the direct mode the query runs in this process on the engine,
against the client's own registry; its input is staged for the engine and removed afterwards. Over HTTP the service
runs it and the call waits for it (`run_remotely`)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from jobqueue.attribution import Attribution
from jobqueue.backend import QueryRequest
from jobqueue.errors import JobQueueError
from jobqueue.handles import AsyncJobHandle, AsyncLocalResult
from jobqueue.inputs import time_range
from jobqueue.models import JobRecord, JobStatus, QueryJob
from jobqueue.storage import job_uri

if TYPE_CHECKING:
    from jobqueue.client import AsyncJobQueueClient


def run_in_process(
    client: AsyncJobQueueClient, table: pa.Table, columns: list[str], output: list[str], now: datetime,
    include_input_time: bool, attribution: Attribution,
) -> AsyncLocalResult:
    from jobqueue.engine.execute import PreparedQuery  # the engine is only needed for in-process runs

    job_id = uuid.uuid4().hex
    input_uri = job_uri(client.settings.staging, client.settings.environment, job_id, "input.parquet")
    client.storage.write_table(table, input_uri)
    job = QueryJob(
        job_id=job_id, environment=client.settings.environment, resource_group="in-process",
        output=list(output), input_uri=input_uri, input_columns=columns, input_rows=table.num_rows,
        submitted_at=now, include_input_time=include_input_time, **time_range(table), **attribution.model_dump(),
    )
    succeeded = False
    started = datetime.now(UTC)
    try:
        outcome = PreparedQuery(job, client.registry, client.settings, consumer_id="in-process").execute()
        succeeded = True
    finally:  # the staged input, and the result folder of a failed run, are of no use to anyone
        client.storage.remove_job_files(job_id, result=not succeeded)
    record = JobRecord(
        job_id=job_id, status=JobStatus.SUCCEEDED, resource_group=job.resource_group, output=job.output,
        input_rows=job.input_rows, submitted_at=now, started_at=started, finished_at=datetime.now(UTC),
        consumer_id="in-process", progress=1.0, attempts=1, max_retries=job.max_retries,
        result_uri=outcome.result_uri, summary=outcome.summary, **attribution.model_dump(),
    )
    return AsyncLocalResult(record, client.storage)


async def run_remotely(client: AsyncJobQueueClient, query: QueryRequest) -> AsyncLocalResult:
    """`run_asynchronously=False` over HTTP: the service runs the query (this client has no registry file or
    storage to run it with); this submits it, waits for its end on the long poll, and returns it finished, as
    the direct mode's in-process run (a failure raises `JobFailedError`). Interrupted (Ctrl-C, a cancelled
    task), the job is cancelled: nobody is left to read its result."""
    handle = AsyncJobHandle(await client.backend.submit(query), client)
    try:
        record = await handle.wait(show_progress=False)
    except asyncio.CancelledError:
        with contextlib.suppress(JobQueueError):
            await asyncio.shield(client.backend.cancel(handle.id, 0))
        raise
    return AsyncLocalResult(record, fetch=client.read_result)
