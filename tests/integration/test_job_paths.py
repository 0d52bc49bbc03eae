"""Each job gets its own staged input and result, even when ids differ only in characters a path
cannot tell apart, and when two environments share one Redis and one bucket and use the same id."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest
import redis

from jobqueue import AsyncJobQueueClient, JobStatus
from jobqueue.client import PreparedSubmission
from jobqueue.direct_submit import prepare_input
from jobqueue.settings import Settings
from tests.helpers import worker_running


@pytest.fixture
def other_settings(settings: Settings, redis_url: str) -> Iterator[Settings]:
    """A second environment on the same Redis and the same staging and results roots."""
    env = f"t-{uuid.uuid4().hex[:12]}"
    yield settings.model_copy(update={"environment": env})
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"jobqueue:{env}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


async def submit(client: AsyncJobQueueClient, job_id: str, users: list[int]) -> None:
    now = datetime.now(UTC)
    table, columns = prepare_input(client, {"user.id": users}, ["user.f0"], None, now)
    assert await client.submit_prepared(PreparedSubmission(table, columns, ["user.f0"], "default", job_id, now))


async def run_until_final(settings: Settings, client: AsyncJobQueueClient, ids: list[str]) -> dict[str, object]:
    async with worker_running(settings, max_jobs=4):
        return {i: await client.job(i).wait(timeout=60, show_progress=False) for i in ids}


async def test_ids_that_differ_only_in_unsafe_characters_each_get_their_own_result(settings):
    run = uuid.uuid4().hex[:8]  # arq's per-job keys outlive a test run
    rows = {f"vic:7-{run}": [1], f"vic_7-{run}": [1, 2], f"VIC_7-{run}": [1, 2, 3], f"Vic:7-{run}": [1, 2, 3, 4]}
    async with AsyncJobQueueClient(settings) as client:
        for job_id, users in rows.items():
            await submit(client, job_id, users)
        records = await run_until_final(settings, client, list(rows))
    assert len({r.result_uri for r in records.values()}) == len(rows), "one result file per job"
    for job_id, users in rows.items():
        record = records[job_id]
        assert record.status is JobStatus.SUCCEEDED, (job_id, record.error)
        assert record.summary.rows_in == record.summary.rows_out == len(users), job_id
        assert pq.read_table(record.result_uri).num_rows == len(users), job_id


async def test_two_environments_on_one_redis_and_one_bucket_run_the_same_job_id(settings, other_settings):
    job_id = f"scheduled:daily:{uuid.uuid4().hex[:8]}"  # deterministic ids, as scheduled runs have
    async with AsyncJobQueueClient(settings) as a, AsyncJobQueueClient(other_settings) as b:
        await submit(a, job_id, [1, 2])
        await submit(b, job_id, [1, 2, 3])  # was refused: arq's `arq:job:<id>` key is shared by environments
        ra = (await run_until_final(settings, a, [job_id]))[job_id]
        rb = (await run_until_final(other_settings, b, [job_id]))[job_id]
    assert ra.status is JobStatus.SUCCEEDED and rb.status is JobStatus.SUCCEEDED, (ra.error, rb.error)
    assert ra.result_uri != rb.result_uri
    assert pq.read_table(ra.result_uri).num_rows == 2 and pq.read_table(rb.result_uri).num_rows == 3
