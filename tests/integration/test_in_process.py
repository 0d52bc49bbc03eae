"""An in-process result (`run_asynchronously=False`) has the surface of a queued job's handle:
`wait` returns the job's record, `cancel(wait=...)` raises `JobStateError` as for any finished job,
and the async client's result reads asynchronously."""

from __future__ import annotations

import pyarrow as pa
import pytest

from jobqueue import AsyncJobQueueClient, JobHandle, JobQueueClient, JobRecord, JobStatus
from jobqueue.errors import JobStateError

IDS = {"user.id": [1, 2]}


async def test_the_async_clients_in_process_result_waits_reads_and_cancels_like_a_handle(settings):
    async with AsyncJobQueueClient(settings) as client:
        result = await client.offline_query(IDS, ["user.f0"], run_asynchronously=False)
        record = await result.wait(timeout=1, show_progress=False)
        assert isinstance(record, JobRecord) and record.job_id == result.id
        assert record.status is JobStatus.SUCCEEDED and await result.status() is JobStatus.SUCCEEDED
        assert record.summary is not None and record.summary == result.performance_summary
        assert record.summary.consumer_id == "in-process" and record.result_uri
        table = await result.to_arrow()
        assert isinstance(table, pa.Table) and table.num_rows == 2
        assert len(await result.to_pandas()) == 2
        with pytest.raises(JobStateError, match="ran in-process and has already finished"):
            await result.cancel(wait=1)


def test_the_sync_clients_in_process_result_is_a_job_handle(settings):
    with JobQueueClient(settings) as client:
        result = client.offline_query(IDS, ["user.f0"], run_asynchronously=False)
        assert isinstance(result, JobHandle)
        record = result.wait(timeout=1, show_progress=False)
        assert isinstance(record, JobRecord) and record.job_id == result.id
        assert record.status is JobStatus.SUCCEEDED and result.record() == record
        assert result.to_arrow().num_rows == 2
        with pytest.raises(JobStateError, match="ran in-process and has already finished"):
            result.cancel(wait=1)
