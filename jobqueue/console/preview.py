"""The first rows of a job's Parquet result, for its page: read through the storage layer (local or S3) from the
file's first row group(s) only, never the whole file; with the bytes read, so a test can hold it to that.

    preview = await asyncio.to_thread(read_preview, storage, record.result_uri, 50)
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobqueue.storage import Storage

MAX_TEXT = 200  # characters of one cell on the page


@dataclass(frozen=True)
class Preview:
    columns: list[str]
    rows: list[list[str]]
    total_rows: int  # in the whole file (from its footer)
    file_bytes: int
    bytes_read: int  # of the file, to read the footer and these rows


class _Counting:
    """A seekable file that counts the bytes read through it (pyarrow reads only the ranges it needs)."""

    def __init__(self, inner: pa.NativeFile) -> None:
        self.inner, self.bytes_read, self.closed = inner, 0, False

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n if n is not None and n >= 0 else None)
        self.bytes_read += len(data)
        return bytes(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.inner.seek(offset, whence))

    def tell(self) -> int:
        return int(self.inner.tell())

    def size(self) -> int:
        return int(self.inner.size())

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True
        self.inner.close()


def cell(value: Any) -> str:
    """One value as page text: an ISO time, a number as Python writes it, an empty cell for null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def read_preview(storage: Storage, uri: str, limit: int) -> Preview:
    """The first `limit` rows of the Parquet file at `uri`: its footer, then row groups from the first until there
    are `limit` rows. Raises FileNotFoundError when the file is gone."""
    fs, path = storage.resolve(uri)
    counting = _Counting(fs.open_input_file(path))
    try:
        parquet = pq.ParquetFile(pa.PythonFile(counting, mode="r"))
        meta = parquet.metadata
        tables, rows = [], 0
        for group in range(meta.num_row_groups):
            if rows >= limit:
                break
            table = parquet.read_row_group(group)
            tables.append(table)
            rows += table.num_rows
        schema = parquet.schema_arrow
        table = pa.concat_tables(tables).slice(0, limit) if tables else schema.empty_table()
        body = [[cell(v) for v in row.values()] for row in table.to_pylist()]
        return Preview(columns=list(schema.names), rows=body, total_rows=meta.num_rows, file_bytes=counting.size(),
                       bytes_read=counting.bytes_read)
    finally:
        counting.close()
