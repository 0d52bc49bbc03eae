"""Input normalisation and its errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from jobqueue.errors import InvalidQueryError
from jobqueue.inputs import to_arrow, with_times

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def test_dict_pandas_and_arrow_agree():
    d = {"user.id": [3, 1, 2]}
    for value in (d, pd.DataFrame(d), pa.table(d)):
        assert to_arrow(value).column("user.id").to_pylist() == [3, 1, 2]


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
    ],
)
def test_bad_input(input, times, field, words):
    with pytest.raises(InvalidQueryError) as info:
        with_times(to_arrow(input), times, NOW)
    assert info.value.field == field
    for word in words:
        assert word in str(info.value)


def test_pandas_times_series():
    times = pd.Series([NOW - timedelta(days=1), NOW])
    t = with_times(to_arrow({"user.id": [1, 2]}), times, NOW)
    assert t.column("__ts__").to_pylist() == [NOW - timedelta(days=1), NOW]
