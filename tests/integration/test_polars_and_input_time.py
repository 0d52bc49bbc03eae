"""polars in and out, and the opt-in `input_time` column (issue 18, item 7), through a real consumer.

The queued path goes SDK -> payload (`QueryJob.include_input_time`) -> consumer -> result file; the in-process
path (`run_asynchronously=False`) runs the same engine in the SDK.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pandas as pd
import polars as pl
import pytest

from jobqueue import AsyncJobQueueClient, JobQueueClient, JobStatus
from jobqueue.sample import sample_input
from tests.helpers import worker_running
from tests.reference import assert_same, reference

OUTPUT = ["user.f0", "user.logins", "user.segment"]


async def test_polars_in_gives_the_rows_pandas_in_gives_and_to_polars_equals_to_pandas(settings, store):
    ids, times = sample_input(store.users, 500, seed=3)
    frame = pd.DataFrame({"user.id": ids["user.id"].to_numpy()})
    async with AsyncJobQueueClient(settings) as client, worker_running(settings, max_jobs=2):
        from_pandas = await client.offline_query(frame, OUTPUT, times)
        from_polars = await client.offline_query(pl.from_pandas(frame), OUTPUT, pl.from_arrow(times))
        for job in (from_pandas, from_polars):
            assert (await job.wait(timeout=60, show_progress=False)).status is JobStatus.SUCCEEDED
        expected = reference(store, ids["user.id"], times, OUTPUT)
        assert_same(await from_pandas.to_pandas(), expected)
        assert_same(await from_polars.to_pandas(), expected)
        result = await from_polars.to_polars()
        assert isinstance(result, pl.DataFrame) and result.columns == ["user.id", *OUTPUT]
        pd.testing.assert_frame_equal(result.to_pandas(), await from_polars.to_pandas())  # values and dtypes
        assert result["user.logins"].null_count() > 0  # nulls stay nulls (pandas shows them as NaN)


async def test_the_input_time_column_holds_each_rows_as_of_time_and_is_opt_in(settings, store):
    ids, times = sample_input(store.users, 200, seed=5)
    async with AsyncJobQueueClient(settings) as client, worker_running(settings, max_jobs=2):
        audited = await client.offline_query(ids, OUTPUT, times, include_input_time=True)
        plain = await client.offline_query(ids, OUTPUT, times)
        for job in (audited, plain):
            assert (await job.wait(timeout=60, show_progress=False)).status is JobStatus.SUCCEEDED
        table = await audited.to_arrow()
        assert table.column_names == ["user.id", "input_time", *OUTPUT]
        assert table.column("input_time").to_pylist() == times.to_pylist()  # row for row, in input order
        assert str(table.schema.field("input_time").type) == "timestamp[us, tz=UTC]"
        expected = reference(store, ids["user.id"], times, OUTPUT)
        assert_same((await audited.to_pandas()).drop(columns="input_time"), expected)  # the answers do not move
        assert (await plain.to_arrow()).column_names == ["user.id", *OUTPUT]  # absent by default


def test_in_process_input_time_defaults_to_now_and_to_polars_needs_the_extra(settings, monkeypatch):
    before = datetime.now(UTC)
    with JobQueueClient(settings) as client:
        naive = [datetime(2024, 3, 1, 12), datetime(2024, 3, 2)]  # naive times are UTC
        result = client.offline_query(pl.DataFrame({"user.id": [1, 2]}), ["user.f0"], naive,
                                      run_asynchronously=False, include_input_time=True)
        assert result.to_polars()["input_time"].to_list() == [t.replace(tzinfo=UTC) for t in naive]
        now = client.offline_query({"user.id": [1]}, ["user.f0"], run_asynchronously=False, include_input_time=True)
        assert before <= now.to_pandas()["input_time"][0] <= datetime.now(UTC)
        monkeypatch.setitem(sys.modules, "polars", None)  # as where polars is not installed
        with pytest.raises(ImportError, match=r"pip install 'jobqueue\[polars\]'"):
            result.to_polars()
        assert result.to_pandas()["user.id"].tolist() == [1, 2]  # the rest works without it
