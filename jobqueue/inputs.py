"""Query input normalisation: dict / pandas / polars / Arrow -> one Arrow table with `__ts__` and `__row__`.

Pure, no I/O. Every rejection is an `InvalidQueryError` naming the argument and the fix.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from jobqueue.errors import InvalidQueryError
from jobqueue.plan import ROW_COLUMN, TS_COLUMN

TS_TYPE = pa.timestamp("us", tz="UTC")


def to_arrow(input: Any) -> pa.Table:
    """Accept a column dict, a pandas or polars DataFrame or an Arrow table."""
    polars = sys.modules.get("polars")  # a polars frame exists only once polars is imported
    if isinstance(input, pa.Table):
        table = input
    elif isinstance(input, pa.RecordBatch):
        table = pa.Table.from_batches([input])
    elif hasattr(input, "to_dict") and hasattr(input, "columns") and hasattr(input, "iloc"):
        table = pa.Table.from_pandas(input, preserve_index=False)
    elif polars is not None and isinstance(input, polars.DataFrame):
        table = input.to_arrow()
    elif polars is not None and isinstance(input, polars.LazyFrame):
        raise InvalidQueryError("input", "is a polars LazyFrame; pass the DataFrame of its rows (`.collect()`)")
    elif isinstance(input, Mapping):
        table = _from_mapping(input)
    else:
        raise InvalidQueryError(
            "input", f"got {type(input).__name__}; pass a dict of columns, a pandas or polars DataFrame or an Arrow "
            "table"
        )
    if table.num_columns == 0 or table.num_rows == 0:
        raise InvalidQueryError("input", "is empty; pass at least one row with the primary key column")
    return table


def _from_mapping(input: Mapping[str, Any]) -> pa.Table:
    columns: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for name, values in input.items():
        if not isinstance(name, str):
            raise InvalidQueryError("input", f"column name {name!r} must be a string like 'user.id'")
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise InvalidQueryError(f"input[{name!r}]", "must be a list of values, one per row")
        columns[name] = values
        lengths[name] = len(values)
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k!r}: {v}" for k, v in lengths.items())
        raise InvalidQueryError(
            "input", f"columns have different lengths ({detail}); give every column one value per row"
        )
    try:
        return pa.table(columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InvalidQueryError("input", f"a column mixes value types: {e}") from None


def with_times(table: pa.Table, input_times: Any, now: datetime) -> pa.Table:
    """Append `__ts__` (the as-of time per row; default `now`) and `__row__` (input order)."""
    n = table.num_rows
    ts = as_of_times(input_times, n, now)
    return table.append_column(TS_COLUMN, ts).append_column(ROW_COLUMN, pa.array(np.arange(n, dtype=np.int64)))


def as_of_times(input_times: Any, rows: int, now: datetime) -> pa.Array:
    """The as-of time of each of `rows` rows (`__ts__`): `input_times` checked and in UTC microseconds, or `now`."""
    if input_times is None:
        return pa.repeat(pa.scalar(now.astimezone(UTC), type=TS_TYPE), rows)
    if isinstance(input_times, (datetime, str)) or not hasattr(input_times, "__len__"):
        raise InvalidQueryError("input_times", "must be a list of datetimes, one per input row")
    if len(input_times) != rows:
        raise InvalidQueryError(
            "input_times", f"has {len(input_times)} values but the input has {rows} rows; give one per row"
        )
    return timestamps(input_times)


def timestamps(values: Sequence[Any]) -> pa.Array:
    try:
        arr = pa.array(values) if not isinstance(values, (pa.Array, pa.ChunkedArray)) else values
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InvalidQueryError("input_times", f"must be datetimes: {e}") from None
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_timestamp(arr.type) and not pa.types.is_date(arr.type):
        raise InvalidQueryError("input_times", f"must be datetimes, got values of type {arr.type}")
    if arr.null_count:
        raise InvalidQueryError("input_times", "contains nulls; give every row a time")
    if pa.types.is_timestamp(arr.type) and arr.type.tz is None:
        arr = arr.cast(pa.timestamp(arr.type.unit, tz="UTC"))  # naive times are taken as UTC
    try:
        return arr.cast(TS_TYPE)
    except pa.ArrowInvalid as e:
        raise _not_microseconds(arr, e) from None


def _not_microseconds(arr: pa.Array, error: Exception) -> InvalidQueryError:
    """Times are compared to the microsecond; a finer one is refused, not rounded (either way it would
    move, and rounded up it would see source rows from after it)."""
    import pyarrow.compute as pc

    if pa.types.is_timestamp(arr.type) and arr.type.unit == "ns":
        finer = pc.not_equal(arr, pc.floor_temporal(arr, unit="microsecond"))
        i = pc.index(finer, True).as_py()
        if i >= 0:
            return InvalidQueryError(
                f"input_times[{i}]", f"{arr[i].cast(pa.string())} is finer than a microsecond; times are compared "
                "to the microsecond: floor them first (pandas `.dt.floor('us')`, pyarrow "
                "`pc.floor_temporal(times, unit='microsecond')`)")
    return InvalidQueryError("input_times", f"cannot be read as microsecond UTC times: {error}")


def time_range(table: pa.Table) -> dict[str, datetime]:
    """`input_time_min` / `input_time_max` of a table made by `with_times`."""
    import pyarrow.compute as pc

    bounds = pc.min_max(table.column(TS_COLUMN))
    return {"input_time_min": bounds["min"].as_py(), "input_time_max": bounds["max"].as_py()}
