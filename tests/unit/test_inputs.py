"""Input normalisation and its errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from jobqueue.errors import InvalidQueryError
from jobqueue.inputs import to_arrow, with_times

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def test_dict_pandas_and_arrow_agree():
    d = {"user.id": [3, 1, 2]}
    for value in (d, pd.DataFrame(d), pa.table(d)):
        assert to_arrow(value).column("user.id").to_pylist() == [3, 1, 2]


def test_a_polars_frame_gives_the_table_pandas_gives():
    d = {"user.id": [3, 1, 2], "user.name": ["c", "a", "b"]}
    from_polars, from_pandas = to_arrow(pl.DataFrame(d)), to_arrow(pd.DataFrame(d))
    assert from_polars.column_names == from_pandas.column_names == ["user.id", "user.name"]
    assert from_polars.to_pylist() == from_pandas.to_pylist()
    with pytest.raises(InvalidQueryError, match=r"polars LazyFrame; pass the DataFrame of its rows \(`.collect\(\)`\)"):
        to_arrow(pl.DataFrame(d).lazy())


def test_polars_times_series():
    times = pl.Series([datetime(2024, 1, 1, 12), datetime(2024, 1, 2)])  # naive: UTC
    t = with_times(to_arrow(pl.DataFrame({"user.id": [1, 2]})), times, NOW)
    assert t.column("__ts__").to_pylist() == [datetime(2024, 1, 1, 12, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)]


def test_times_default_to_submission_and_rows_are_numbered():
    t = with_times(to_arrow({"user.id": [1, 2]}), None, NOW)
    assert t.column("__ts__").to_pylist() == [NOW, NOW]
    assert t.column("__row__").to_pylist() == [0, 1]
    assert t.schema.field("__ts__").type == pa.timestamp("us", tz="UTC")


def test_naive_times_are_utc():
    naive = [datetime(2024, 1, 1, 12), datetime(2024, 1, 2)]
    t = with_times(to_arrow({"user.id": [1, 2]}), naive, NOW)
    assert t.column("__ts__").to_pylist()[0] == datetime(2024, 1, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("input", "times", "field", "words"),
    [
        ({}, None, "input", ["empty"]),
        ({"user.id": []}, None, "input", ["empty"]),
        (pd.DataFrame({"user.id": []}), None, "input", ["empty"]),
        ({"user.id": [1, 2], "user.x": [1]}, None, "input", ["different lengths", "'user.id': 2", "'user.x': 1"]),
        ({"user.id": 5}, None, "input['user.id']", ["list of values"]),
        ([1, 2], None, "input", ["dict of columns"]),
        ({"user.id": [1, 2]}, [NOW], "input_times", ["1 values", "2 rows"]),
        ({"user.id": [1, 2]}, NOW, "input_times", ["list of datetimes"]),
        ({"user.id": [1, 2]}, [1, 2], "input_times", ["datetimes"]),
        ({"user.id": [1, 2]}, [NOW, None], "input_times", ["nulls"]),
        ({"user.id": [1, 2]}, pd.Series([pd.Timestamp("2024-01-01 10:00"), pd.Timestamp("2024-01-01 10:00:00.0000004")
                                         ]),
         "input_times[1]", ["2024-01-01 10:00:00.000000400", "finer than a microsecond", ".dt.floor('us')"]),
        ({"user.id": [1]}, pa.array([1_700_000_000_000_000_001], pa.timestamp("ns", tz="UTC")), "input_times[0]",
         ["finer than a microsecond", "floor_temporal"]),
        ({"user.id": [1]}, pa.array([10**17], pa.timestamp("s")), "input_times", ["microsecond UTC times"]),
    ],
)
def test_bad_input(input, times, field, words):
    with pytest.raises(InvalidQueryError) as info:
        with_times(to_arrow(input), times, NOW)
    assert info.value.field == field
    for word in words:
        assert word in str(info.value)


def test_nanosecond_times_on_whole_microseconds_are_taken_as_they_are():
    times = pd.Series([pd.Timestamp("2024-01-01 10:00:00.000001"), pd.Timestamp("2024-01-01 10:00")]).astype(
        "datetime64[ns]")
    assert times.dtype == "datetime64[ns]"
    t = with_times(to_arrow({"user.id": [1, 2]}), times, NOW)
    assert t.column("__ts__").to_pylist() == [datetime(2024, 1, 1, 10, 0, 0, 1, tzinfo=UTC),
                                              datetime(2024, 1, 1, 10, tzinfo=UTC)]


def test_pandas_times_series():
    times = pd.Series([NOW - timedelta(days=1), NOW])
    t = with_times(to_arrow({"user.id": [1, 2]}), times, NOW)
    assert t.column("__ts__").to_pylist() == [NOW - timedelta(days=1), NOW]
