"""`RowGroupAssembler`: a Parquet file put together from its tail and an in-order stream, its row groups decoded in
many threads at once while it arrives (each thread its own `ParquetFile`: a shared one fails or crashes), gives the
file's table exactly; also when the tail does not hold the footer, and when the tail is the whole file."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobqueue.result_download import TAIL_BYTES, RowGroupAssembler


def _file(rows: int, row_group_size: int) -> tuple[bytes, pa.Table]:
    rng = np.random.default_rng(7)
    table = pa.table({"user.id": np.arange(rows, dtype=np.int64), "user.f0": rng.random(rows),
                      "user.f1": pa.array(rng.integers(0, 50, rows).astype(str)).dictionary_encode()})
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group_size, compression="zstd")
    return sink.getvalue(), pq.read_table(io.BytesIO(sink.getvalue()))


async def _assemble(data: bytes, tail: int, chunk: int, pool: ThreadPoolExecutor) -> pa.Table:
    download = RowGroupAssembler(len(data), pool)
    tail_start = max(0, len(data) - tail)
    download.put_tail(tail_start, data[tail_start:])
    if download.missing is not None:
        start, end = download.missing
        assert (start, end) == (0, tail_start)
        for offset in range(0, end, chunk):
            download.put(offset, data[offset:min(offset + chunk, end)])
    else:
        assert tail_start == 0
    return await download.table()


async def test_two_million_rows_decode_in_many_threads_while_they_arrive():
    data, expected = _file(2_000_000, 20_000)  # 100 row groups
    assert pq.ParquetFile(io.BytesIO(data)).metadata.num_row_groups == 100
    with ThreadPoolExecutor(max_workers=32) as pool:
        for _ in range(3):
            got = await _assemble(data, TAIL_BYTES, 64 << 10, pool)
            assert got.num_rows == 2_000_000 and got.equals(expected)


@pytest.mark.parametrize("tail", [16, 1 << 30], ids=["footer-not-in-tail", "tail-is-the-whole-file"])
async def test_a_tail_without_the_whole_footer_or_with_the_whole_file(tail):
    data, expected = _file(50_000, 5_000)
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert (await _assemble(data, tail, 4096, pool)).equals(expected)
