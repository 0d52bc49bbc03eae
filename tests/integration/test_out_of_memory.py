"""DuckDB running out of memory, through real consumer processes: one retry with fewer threads and
`preserve_insertion_order=false` that restores input order itself, else a failed job that says what to raise.

The workload: windowed aggregations over 2M events, 200k input rows. Under a 64 MiB memory_limit DuckDB 2.0
runs out of memory with 2 threads and finishes with 1; under 16 MiB it fails with either. The consumers get
1 GiB (the local backend may enforce it with a memory cgroup) and DuckDB a small percent of it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobqueue import AsyncJobQueueClient, JobFailedError, JobStatus, ResourceRequests
from jobqueue.engine.duckdb_run import EngineLimits, QueryRun
from jobqueue.engine.sources import ParquetSource
from jobqueue.inputs import to_arrow, with_times
from jobqueue.plan import plan_query
from jobqueue.registry import load_registry
from jobqueue.sample import sample_input, write_sample_store
from jobqueue.storage import Storage
from tests.helpers import running_manager, with_groups

AGGREGATES = ["user.txn_sum_30d", "user.txn_count_7d", "user.txn_mean_30d", "user.txn_min_30d",
              "user.txn_max_30d", "user.merchants_30d"]


@pytest.fixture(scope="module")
def events_store(tmp_path_factory):
    return write_sample_store(tmp_path_factory.mktemp("events"), users=50_000, snapshots=1, features=1,
                              events_per_user=40)


def unconstrained(settings, store, ids, times, output, tmp_path):
    """The same query on the engine alone with 1 GiB: the answer to match (tests/integration/test_engine.py
    checks the engine against a brute-force reference on smaller inputs)."""
    plan = plan_query(["user.id"], output, load_registry(store.registry_path))
    sources = {j.relation: ParquetSource(j.source, Storage(settings)) for j in plan.joins}
    result = QueryRun(plan, EngineLimits(1 << 30, 2, tmp_path / "free-spill"), sources).run(
        with_times(to_arrow({"user.id": ids}), times, datetime.now(UTC)), tmp_path / "free.parquet")
    assert result.oom_retries == 0 and result.spilled_bytes == 0
    return pq.read_table(tmp_path / "free.parquet").to_pandas()


def spill_leftovers(settings):
    root = settings.spill_root
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def test_out_of_memory_is_retried_with_fewer_threads_and_rows_stay_in_input_order(
        settings, events_store, tmp_path):
    settings = with_groups(
        settings, tmp_path, {"tight": {"max_instances": 1, "memory": "1GiB", "memory_limit_percent": 6.25}},
        registry_path=events_store.registry_path,
    )
    assert settings.query_threads == 2
    ids, times = sample_input(events_store.users, 200_000, seed=23)
    output = ["user.id", *AGGREGATES]
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(ids, output, times, resources=ResourceRequests(resource_group="tight"))
        record = await job.wait(timeout=180, show_progress=False)
        assert record.status is JobStatus.SUCCEEDED and record.attempts == 1, record
        s = job.performance_summary
        assert s.memory_limit_bytes == 64 << 20 and s.threads == 2
        assert s.oom_retries == 1, "the first run (2 threads, 64 MiB) must run out of memory and the retry succeed"
        assert s.stage_seconds["oom_reorder"] > 0 and s.spilled_bytes > 0
        assert s.rows_in == s.rows_out == 200_000
        df = await job.to_pandas()
    assert list(df.columns) == output  # `__row__` is not in the result
    assert df["user.id"].tolist() == ids["user.id"].tolist()  # input order
    pd.testing.assert_frame_equal(df, unconstrained(settings, events_store, ids["user.id"], times, output, tmp_path))
    assert spill_leftovers(settings) == []


async def test_out_of_memory_on_the_retry_too_fails_the_job_naming_the_limit_and_the_setting(
        settings, events_store, tmp_path):
    settings = with_groups(
        settings, tmp_path, {"tiny": {"max_instances": 1, "memory": "1GiB", "memory_limit_percent": 1.5625}},
        registry_path=events_store.registry_path,
    )
    ids, times = sample_input(events_store.users, 200_000, seed=23)
    async with running_manager(settings), AsyncJobQueueClient(settings) as client:
        job = await client.offline_query(ids, AGGREGATES, times, max_retries=2,
                                         resources=ResourceRequests(resource_group="tiny"))
        with pytest.raises(JobFailedError) as info:
            await job.wait(timeout=180, show_progress=False)
    record = info.value.record
    assert record.status is JobStatus.FAILED
    assert record.attempts == 1 and len(record.errors) == 1, "the engine already retried: not retried again"
    for words in ("QueryOutOfMemory", "memory_limit 16.0 MiB (16777216 bytes)",
                  "retry with 1 thread(s) and preserve_insertion_order=false",
                  "raise JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT (now 1.5625% of 1.0 GiB",
                  "a resource group's `memory_limit_percent`", "a resource group's `memory`", "Out of Memory Error"):
        assert words in record.error, (words, record.error)
    assert spill_leftovers(settings) == []
