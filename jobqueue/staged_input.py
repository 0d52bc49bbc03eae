"""A staged upload as a query input, checked and staged for its job without holding the whole table in memory
(`POST /v1/jobs?upload=<ref>`: large inputs are what uploads are for).

    staged = open_staged_input(storage, uri, media, times_column)   # Parquet: the footer; Arrow IPC: one scan
    staged = with_time_range(staged, now)       # the as-of times checked batch by batch (their column only)
    rows = write_job_input(staged, job_uri)     # batch by batch, with `__ts__` and `__row__` appended

Only the schema, the row count, the byte size and (with `times_column`) the times are checked before anything is
staged; each step holds one record batch at a time. The texts are the in-memory path's (`jobqueue.inputs`,
`jobqueue.direct_submit.prepare_input`), so a staged input is refused exactly as the same body would be.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from jobqueue.errors import InvalidQueryError
from jobqueue.inputs import TS_TYPE, timestamps
from jobqueue.plan import ROW_COLUMN, TS_COLUMN
from jobqueue.storage import Storage

PARQUET = "application/vnd.apache.parquet"
BATCH_ROWS = 256 * 1024  # rows per batch read from a staged Parquet file (a few MB a column)


@dataclass(frozen=True)
class StagedInput:
    """A staged object's shape: what the checks need, read without decoding its rows."""

    storage: Storage
    uri: str
    media: str  # `application/vnd.apache.parquet` or `application/vnd.apache.arrow.stream`
    columns: list[str]  # the input's own columns (without `times_column`)
    num_rows: int
    nbytes: int  # decoded size: Parquet's uncompressed row groups, Arrow's batches
    times_column: str | None = None  # the column holding each row's as-of time (taken out of the input)
    now: datetime | None = None  # the as-of time of every row without `times_column` (`with_time_range`)
    time_min: datetime | None = None
    time_max: datetime | None = None
    types: dict[str, pa.DataType] = field(default_factory=dict)  # each column's type, as staged

    @property
    def kind(self) -> str:
        return "a Parquet file" if self.media == PARQUET else "an Arrow IPC stream"

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The rows, one record batch at a time; `columns`: only these (Parquet reads only their pages)."""
        fs, path = self.storage.resolve(self.uri)
        try:
            with fs.open_input_file(path) as f:
                if self.media == PARQUET:
                    yield from pq.ParquetFile(f).iter_batches(BATCH_ROWS, columns=columns, use_threads=False)
                    return
                for batch in ipc.open_stream(f):
                    yield batch.select(columns) if columns is not None else batch
        except (pa.ArrowException, OSError, ValueError) as e:
            raise InvalidQueryError("input", f"the body is not {self.kind}: {e}") from None

    def time_range(self) -> dict[str, datetime]:
        assert self.time_min is not None and self.time_max is not None, "with_time_range first"
        return {"input_time_min": self.time_min, "input_time_max": self.time_max}


def open_staged_input(storage: Storage, uri: str, media: str, times_column: str | None) -> StagedInput:
    """The object at `uri` as a `StagedInput`: a Parquet file's footer, or one scan of an Arrow IPC stream that
    counts its rows (one batch in memory at a time). 422 (`input`) when it does not decode; `input_times_column`
    when that column is not in it."""
    fs, path = storage.resolve(uri)
    kind = "a Parquet file" if media == PARQUET else "an Arrow IPC stream"
    try:
        with fs.open_input_file(path) as f:
            if media == PARQUET:
                meta = pq.ParquetFile(f).metadata
                schema = meta.schema.to_arrow_schema()
                rows = meta.num_rows
                nbytes = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            else:
                reader = ipc.open_stream(f)
                schema, rows, nbytes = reader.schema, 0, 0
                for batch in reader:
                    rows, nbytes = rows + batch.num_rows, nbytes + batch.nbytes
    except (pa.ArrowException, OSError, ValueError) as e:
        raise InvalidQueryError("input", f"the body is not {kind}: {e}") from None
    names = list(schema.names)
    if times_column is not None and times_column not in names:
        raise InvalidQueryError("input_times_column", f"{times_column!r} is not a column of the input; its columns: "
                                f"{', '.join(names)}")
    columns = [c for c in names if c != times_column]
    return StagedInput(storage, uri, media, columns, rows, nbytes, times_column,
                       types={name: schema.field(name).type for name in columns})


def with_time_range(staged: StagedInput, now: datetime) -> StagedInput:
    """`staged` with its as-of times checked (`with_times`' texts, row numbers counted over the whole input) and
    their range: `now` for every row, or a scan of the times column alone."""
    if staged.times_column is None:
        return dataclasses.replace(staged, now=now, time_min=now, time_max=now)
    lows: list[datetime] = []
    highs: list[datetime] = []
    offset = 0
    for batch in staged.batches([staged.times_column]):
        times = _batch_times(batch.column(0), offset)
        offset += batch.num_rows
        if len(times):
            bounds = pc.min_max(times)
            lows, highs = [min([*lows, bounds["min"].as_py()])], [max([*highs, bounds["max"].as_py()])]
    return dataclasses.replace(staged, now=now, time_min=lows[0] if lows else now,
                               time_max=highs[0] if highs else now)


def _batch_times(values: pa.Array, offset: int) -> pa.Array:
    try:
        return timestamps(values)
    except InvalidQueryError as e:
        if e.field.startswith("input_times["):  # the row within the batch: the row within the input
            row = int(e.field.removeprefix("input_times[").rstrip("]")) + offset
            raise InvalidQueryError(f"input_times[{row}]", e.message) from None
        raise


def write_job_input(staged: StagedInput, uri: str) -> int:
    """Write `staged` as a job's input Parquet at `uri` (its columns, then `__ts__` and `__row__`), one batch at
    a time; returns the rows written. Published whole (`Storage.published`)."""
    assert staged.now is not None, "with_time_range first"
    return staged.storage.published(uri, lambda out: _write(staged, out))


def _write(staged: StagedInput, out: Any) -> int:
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        for table in timed_tables(staged):
            if writer is None:
                writer = pq.ParquetWriter(out, table.schema, compression="zstd")
            writer.write_table(table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    return rows


def timed_tables(staged: StagedInput) -> Iterator[pa.Table]:
    """The rows batch by batch as the job reads them: the input's columns, then `__ts__` and `__row__`."""
    now = pa.scalar((staged.now or datetime.now(UTC)).astimezone(UTC), type=TS_TYPE)
    wanted = [*staged.columns, *([staged.times_column] if staged.times_column else [])]
    offset = 0
    for batch in staged.batches(wanted):
        n = batch.num_rows
        if staged.times_column is not None:
            ts = _batch_times(batch.column(len(staged.columns)), offset)
            batch = batch.select(staged.columns)
        else:
            ts = pa.repeat(now, n)
        rows = pa.array(np.arange(offset, offset + n, dtype=np.int64))
        yield pa.Table.from_batches([batch]).append_column(TS_COLUMN, ts).append_column(ROW_COLUMN, rows)
        offset += n

