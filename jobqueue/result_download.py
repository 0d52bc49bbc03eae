"""A Parquet result downloaded and decoded at once: the SDK reads the file's footer first (a ranged request for its
tail), then the rest in one ranged stream, and decodes each row group in a thread as soon as its bytes are in, so
that decoding overlaps the transfer instead of following it. Used by `HttpBackend.read_result` when the API answers
ranges (a local result: `FileResponse`); an answer without ranges (an S3 result, streamed) is read whole, through
a `ResultSink` (in memory up to SPOOL_BYTES, then a temporary file).

    download = RowGroupAssembler(size)
    download.put(offset, tail)             # the footer, from `Range: bytes=-65536`
    for chunk in body: download.put(...)   # row groups start decoding as they complete
    table = await download.table()

Each decoding thread opens its OWN `pq.ParquetFile` over the shared buffer: a `ParquetFile` is not safe to share
between threads (its read cache gives 'ReadRangeCache did not find matching cache entry', or a crash).
"""

from __future__ import annotations

import asyncio
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

TAIL_BYTES = 64 << 10  # asked for first: the footer of any ordinary result fits
SPOOL_BYTES = 64 << 20  # a result read whole is kept in memory up to this size, then in a temporary file
MAGIC = b"PAR1"


def _footer_start(tail: memoryview, tail_start: int) -> int | None:
    """Where the footer begins, if `tail` (the file's last bytes, from `tail_start`) holds all of it."""
    if len(tail) < 8 or bytes(tail[-4:]) != MAGIC:
        return None
    length = int.from_bytes(tail[-8:-4], "little")
    start = tail_start + len(tail) - 8 - length
    return start if start >= tail_start else None


def _row_group_ends(meta: pq.FileMetaData) -> list[int]:
    """The end offset of each row group's bytes (its column chunks)."""
    ends = []
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        end = 0
        for j in range(group.num_columns):
            col = group.column(j)
            start = col.data_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset:
                start = min(start, col.dictionary_page_offset)
            end = max(end, start + col.total_compressed_size)
        ends.append(end)
    return ends


def _decode(buffer: pa.Buffer, group: int) -> pa.Table:
    return pq.ParquetFile(pa.BufferReader(buffer)).read_row_group(group, use_threads=False)


class RowGroupAssembler:
    """A file of `size` bytes filled by `put(offset, bytes)`; row groups decode in `pool` as their bytes complete
    (once the footer is in). Bytes must come in order after the footer (one ranged stream)."""

    def __init__(self, size: int, pool: ThreadPoolExecutor | None = None) -> None:
        self.size = size
        self._data = bytearray(size)
        self._view = memoryview(self._data)
        self._buffer = pa.py_buffer(self._data)  # no copy: the threads read what `put` wrote
        self._pool = pool
        self._filled = 0  # bytes [0, _filled) are in (apart from the tail)
        self._tail_start = size
        self._ends: list[int] | None = None
        self._started: list[asyncio.Future[pa.Table]] = []

    def put(self, offset: int, chunk: bytes) -> None:
        self._view[offset:offset + len(chunk)] = chunk
        if offset == self._filled:
            self._filled += len(chunk)
        self._start_ready()

    def put_tail(self, offset: int, tail: bytes) -> None:
        """The file's last bytes, from `offset`: its footer (the row group layout), when they hold all of it."""
        self._view[offset:offset + len(tail)] = tail
        self._tail_start = offset
        start = _footer_start(self._view[offset:offset + len(tail)], offset)
        if start is not None:
            self._ends = _row_group_ends(pq.read_metadata(pa.BufferReader(self._buffer)))
        self._start_ready()

    @property
    def missing(self) -> tuple[int, int] | None:
        """The range [start, end) still to fetch before the tail (None: nothing)."""
        return None if self._filled >= self._tail_start else (self._filled, self._tail_start)

    def _start_ready(self) -> None:
        if self._ends is None:
            return
        loop = asyncio.get_running_loop()
        while (len(self._started) < len(self._ends)
               and min(self._ends[len(self._started)], self._tail_start) <= self._filled):
            self._started.append(loop.run_in_executor(self._pool, _decode, self._buffer, len(self._started)))

    async def table(self) -> pa.Table:
        """The whole file as a table, once every byte was put."""
        if self._ends is None:  # no footer in the tail: decode it all now
            return await asyncio.to_thread(pq.read_table, pa.BufferReader(self._buffer))
        self._filled = self._tail_start
        self._start_ready()
        parts = await asyncio.gather(*self._started)
        if not parts:
            return await asyncio.to_thread(pq.read_table, pa.BufferReader(self._buffer))
        return pa.concat_tables(parts)


class ResultSink:
    """A downloaded Parquet file: its blocks in memory up to SPOOL_BYTES (read by Arrow without a copy through a
    Python file object), past that in a temporary file (memory-mapped)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._file: Any = None

    def __enter__(self) -> ResultSink:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def write(self, chunk: bytes) -> None:
        if self._file is None and self._size + len(chunk) > SPOOL_BYTES:
            self._file = tempfile.NamedTemporaryFile(prefix="jobqueue-result-", suffix=".parquet")  # noqa: SIM115 (closed in __exit__)
            self._file.writelines(self._parts)
            self._parts = []
        if self._file is not None:
            self._file.write(chunk)
        else:
            self._parts.append(chunk)
        self._size += len(chunk)

    def read_table(self) -> pa.Table:
        if self._file is None:
            return pq.read_table(pa.BufferReader(b"".join(self._parts)))
        self._file.flush()
        return pq.read_table(self._file.name, memory_map=True)


def content_range(response: httpx.Response) -> tuple[int, int | None]:
    """(first byte, file size) of a 206 answer; (0, None) for a 200 (the whole file)."""
    if response.status_code != 206:
        return 0, None
    spec = response.headers.get("content-range", "")  # bytes <first>-<last>/<size>
    first, _, size = spec.removeprefix("bytes ").partition("/")
    return int(first.split("-")[0]), int(size)
