"""A staged upload split into the shards of a sharded query (`jobqueue.sharding`) batch by batch, never whole in
memory: the same rows in the same shards as `sharding.split` of the whole table.

    counts = shard_counts(staged, key, n)           # reads the key column alone: each shard's rows, for the quotas
    ranges = write_shards(staged, key, n, uris)     # each shard's input Parquet, with `__ts__` and `__row__`

`write_shards` writes every shard's file in one pass over the input. A shard staged on the local disk is written
in place; one for an object store is written to a local temporary file first and uploaded when complete (one open
multipart upload per shard would hold a part buffer each).
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobqueue.plan import TS_COLUMN
from jobqueue.sharding import shard_numbers, shard_rows, shard_sizes
from jobqueue.staged_input import StagedInput, timed_tables
from jobqueue.storage import is_local, local_path


def shard_counts(staged: StagedInput, key: str, n: int) -> list[int]:
    """The rows each of the `n` shards gets (a scan of the key column alone)."""
    counts = np.zeros(n, dtype=np.int64)
    for batch in staged.batches([key]):
        counts += shard_sizes(shard_numbers(pa.Table.from_batches([batch]), key, n), n)
    return [int(c) for c in counts]


def write_shards(staged: StagedInput, key: str, n: int, uris: dict[int, str]) -> dict[int, dict[str, datetime]]:
    """Write shard `i`'s rows (in input order) to `uris[i]`, for every shard in `uris` (those with rows); each
    one's `input_time_min` / `input_time_max`."""
    spool = Path(tempfile.mkdtemp(prefix="jobqueue-shards-"))
    targets = {i: local_path(u) if is_local(u) else spool / f"{i}.parquet" for i, u in uris.items()}
    writers: dict[int, pq.ParquetWriter] = {}
    lows: dict[int, datetime] = {}
    highs: dict[int, datetime] = {}
    try:
        for table in timed_tables(staged):
            numbers = shard_numbers(table, key, n)
            for i in np.unique(numbers.to_numpy()).tolist():
                part = shard_rows(table, numbers, i)
                if i not in targets:
                    raise RuntimeError(f"shard {i} has rows that shard_counts did not count")
                if i not in writers:
                    targets[i].parent.mkdir(parents=True, exist_ok=True)
                    writers[i] = pq.ParquetWriter(str(targets[i]), part.schema, compression="zstd")
                writers[i].write_table(part)
                bounds = pc.min_max(part.column(TS_COLUMN))
                low, high = bounds["min"].as_py(), bounds["max"].as_py()
                lows[i], highs[i] = min(low, lows.get(i, low)), max(high, highs.get(i, high))
        for writer in writers.values():
            writer.close()
        writers.clear()
        for i, uri in uris.items():
            if not is_local(uri):
                staged.storage.upload_file(targets[i], uri)
    finally:
        for writer in writers.values():
            writer.close()
        shutil.rmtree(spool, ignore_errors=True)
    return {i: {"input_time_min": lows[i], "input_time_max": highs[i]} for i in lows}
