"""`jobqueue.sharding`, the pure half of sharded queries: a stable split, N for "auto", the parent's derived state."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from jobqueue.errors import InvalidQueryError
from jobqueue.models import JobRecord, JobStatus
from jobqueue.progress import status_text
from jobqueue.sharding import (
    check_num_shards,
    choose_num_shards,
    derive_parent,
    merge_results,
    parent_status,
    shard_numbers,
    shard_sizes,
    split,
)

Q, R, S, F, C, E = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED,
                    JobStatus.EXPIRED)


M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:  # the published algorithm, one value at a time
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _fnv1a(text: str) -> int:
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def test_the_split_is_the_documented_hash_so_it_never_changes_between_releases():
    values = [1, 2, 3, 1, None, 2**40, -7]
    ints = pa.table({"k": pa.array(values, type=pa.int64())})
    expected = [0 if v is None else _splitmix64(v & M64) % 7 for v in values]
    assert shard_numbers(ints, "k", 7).to_pylist() == expected == [2, 4, 2, 2, 0, 5, expected[-1]]
    words = ["a", "bb", None, "a", "日本", ""]
    text = pa.table({"k": pa.array(words)})
    assert shard_numbers(text, "k", 5).to_pylist() == [0 if w is None else _fnv1a(w) % 5 for w in words]


def test_split_keeps_every_row_once_in_input_order_and_duplicates_together():
    keys = [5, 9, None, 5, 7, 9, None, 11] * 5
    table = pa.table({"user.id": pa.array(keys, type=pa.int64()), "__row__": list(range(len(keys)))})
    parts = split(table, "user.id", 3)
    rows = sorted(r for p in parts for r in p.column("__row__").to_pylist())
    assert rows == list(range(len(keys)))
    for p in parts:
        assert p.column("__row__").to_pylist() == sorted(p.column("__row__").to_pylist())
    homes = {}
    for i, p in enumerate(parts):
        for k in p.column("user.id").to_pylist():
            assert homes.setdefault(k, i) == i, "one key, one shard"
    assert homes[None] == 0
    assert shard_sizes(shard_numbers(table, "user.id", 3), 3) == [p.num_rows for p in parts]  # what is staged


def test_merged_results_are_in_input_order_and_nullable():
    table = pa.table({"user.id": list(range(100, 130)), "__row__": list(range(30))})
    shards = [t.select(["user.id", "__row__"]) for t in split(table, "user.id", 4)]
    shards = [shards[2], pa.table({"user.id": pa.array([], pa.int64()), "__row__": pa.array([], pa.int64())}),
              *reversed(shards[:2]), shards[3]]  # any order, and a shard with no rows
    not_null = pa.schema([pa.field("user.id", pa.int64(), nullable=False), pa.field("__row__", pa.int64())])
    shards[0] = shards[0].cast(not_null)  # a shard without nulls may write its columns `not null`
    merged = merge_results(shards, "__row__")
    assert merged.column_names == ["user.id"] and merged.column("user.id").to_pylist() == list(range(100, 130))
    assert merged.schema.field("user.id").nullable


@pytest.mark.parametrize("rows", [[3, 1, 1, 0], [7, 2, 5, 0], [-1, 2, 0, 1]])  # a repeat, gaps, a negative
def test_merged_results_are_sorted_by_row_when_the_rows_are_not_one_of_each(rows):
    merged = merge_results([pa.table({"v": [f"r{r}" for r in rows], "__row__": rows})], "__row__")
    assert merged.column("v").to_pylist() == [f"r{r}" for r in sorted(rows)]


def test_auto_is_ceil_of_rows_over_the_target_within_bounds():
    assert choose_num_shards("auto", 350, 100, 64) == 4
    assert choose_num_shards("auto", 10, 100, 64) == 1
    assert choose_num_shards("auto", 10**9, 100, 64) == 64
    assert choose_num_shards(16, 3, 100, 64) == 3  # never more shards than rows
    for bad, field in [(0, "num_shards"), (1025, "num_shards"), ("x", "num_shards"), (2.0, "num_shards")]:
        with pytest.raises(InvalidQueryError) as e:
            check_num_shards(bad, None)
        assert e.value.field == field
    with pytest.raises(InvalidQueryError, match="num_workers"):
        check_num_shards(2, -1)


@pytest.mark.parametrize("shards, cancel, parent", [
    ([Q, Q], False, Q), ([R, Q], False, R), ([S, Q], False, R), ([S, S], False, S), ([S, F], False, F),
    ([R, F], False, R), ([F, C], False, F), ([E, S], False, E), ([C, C], True, C), ([R, C], True, R),
    ([S, C], False, C),
])
def test_the_parent_state_comes_from_its_shards(shards, cancel, parent):
    assert parent_status(Q, shards, cancel) is parent


def test_derived_parent_counts_shards_and_rows_done_for_the_progress_line():
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def rec(job_id: str, status: JobStatus, rows: int, **kw) -> JobRecord:
        return JobRecord(job_id=job_id, status=status, resource_group="g", output=["user.f0"], input_rows=rows,
                         submitted_at=t, **kw)

    parent = rec("p", Q, 30, shard_ids=["p.s0", "p.s1", "p.s2"])
    shards = [rec("p.s0", S, 10, attempts=1), rec("p.s1", R, 15, progress=0.5, attempts=2), rec("p.s2", Q, 5)]
    derived = derive_parent(parent, shards)
    assert (derived.status, derived.shards_done, derived.rows_done, derived.attempts) == (R, 1, 10, 3)
    assert derived.progress == round((10 + 7.5) / 30, 4)
    assert status_text(derived) == "running · shards 1/3 · rows 10/30"
