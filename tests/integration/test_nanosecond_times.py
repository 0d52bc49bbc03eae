"""Nanosecond source timestamps against microsecond input times, in the real engine: a source row is
never taken before it happened, neither by the latest-value join nor by a window, and the answer
is the one a comparison at full (nanosecond) precision gives."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from jobqueue.engine.duckdb_run import EngineLimits, QueryRun
from jobqueue.engine.sources import ParquetSource
from jobqueue.inputs import to_arrow, with_times
from jobqueue.plan import plan_query
from jobqueue.registry import load_registry
from jobqueue.settings import Settings
from jobqueue.storage import Storage

OUTPUT = ["user.v", "user.n_1h", "user.sum_1h", "user.max_1h"]
UNITS = [pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")]  # DuckDB: TIMESTAMP_NS and TIMESTAMPTZ_NS


def ns(text: str) -> int:
    return pd.Timestamp(text, tz="UTC").value


def write_source(tmp_path, users: list[int], times_ns: list[int], values: list[int], ts_type: pa.DataType):
    pq.write_table(pa.table({"user_id": pa.array(users, pa.int64()), "ts": pa.array(times_ns, ts_type),
                             "v": pa.array(values, pa.int64())}), tmp_path / "events.parquet")
    registry = {"namespaces": {"user": {"primary_key": "id", "sources": [{
        "name": "events", "path": "events.parquet", "key": "user_id", "timestamp": "ts", "features": ["v"],
        "aggregations": {"n_1h": {"function": "count", "window": "1h"},
                         "sum_1h": {"function": "sum", "column": "v", "window": "1h"},
                         "max_1h": {"function": "max", "column": "v", "window": "1h"}}}]}}}
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(registry))
    return load_registry(tmp_path / "registry.yaml")


def query(tmp_path, registry, ids: list[int], times: list[datetime]) -> pd.DataFrame:
    plan = plan_query(["user.id"], OUTPUT, registry)
    table = with_times(to_arrow({"user.id": ids}), times, datetime.now(UTC))
    sources = {j.relation: ParquetSource(j.source, Storage(Settings())) for j in plan.joins}
    QueryRun(plan, EngineLimits(1 << 30, 2, tmp_path / "spill"), sources).run(table, tmp_path / "out.parquet")
    return pq.read_table(tmp_path / "out.parquet").to_pandas()


@pytest.mark.parametrize("ts_type", UNITS, ids=["TIMESTAMP_NS", "TIMESTAMPTZ_NS"])
def test_a_row_400ns_after_the_input_time_is_not_seen(tmp_path, ts_type):
    registry = write_source(tmp_path, [1, 1], [ns("2024-01-01 09:30"), ns("2024-01-01 10:00:00.000000400")],
                            [5, 7], ts_type)
    at = [datetime(2024, 1, 1, 10, tzinfo=UTC),  # 400 ns before the second row: only the first is visible
          datetime(2024, 1, 1, 10, 0, 0, 1, tzinfo=UTC),  # 600 ns after it: both
          datetime(2024, 1, 1, 11, tzinfo=UTC),  # window (10:00:00, 11:00:00] holds the row at 10:00:00.0000004
          datetime(2024, 1, 1, 11, 0, 0, 1, tzinfo=UTC)]  # window (10:00:00.000001, 11:00:00.000001]: empty
    df = query(tmp_path, registry, [1, 1, 1, 1], at)
    assert df["user.v"].tolist() == [5, 7, 7, 7]
    assert df["user.n_1h"].tolist() == [1, 2, 1, 0]
    assert df["user.sum_1h"].tolist()[:3] == [5, 12, 7] and pd.isna(df["user.sum_1h"].iloc[3])
    assert df["user.max_1h"].tolist()[:3] == [5, 7, 7]


def reference(users, times_ns, values, ids, at_ns) -> pd.DataFrame:
    """Brute force at nanosecond precision: windows `t - 1h < ts <= t`; for the latest value, every
    value of the rows `ts <= t` in the latest microsecond (rows of one key within one microsecond are
    simultaneous, as two rows at the same time are: the join may take either)."""
    hour = 3600 * 10**9
    rows = []
    for key, t in zip(ids, at_ns, strict=True):
        seen = [(ts, v) for u, ts, v in zip(users, times_ns, values, strict=True) if u == key and ts <= t]
        window = [v for ts, v in seen if ts > t - hour]
        last_us = max((-(-ts // 1000) for ts, _ in seen), default=None)
        rows.append({"latest": {v for ts, v in seen if -(-ts // 1000) == last_us} or {None},
                     "user.n_1h": len(window), "user.sum_1h": sum(window) if window else None,
                     "user.max_1h": max(window) if window else None})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ts_type", UNITS, ids=["TIMESTAMP_NS", "TIMESTAMPTZ_NS"])
def test_random_nanosecond_rows_match_a_full_precision_reference(tmp_path, ts_type):
    """Rows and input times packed within 100 microseconds of each other and of the window edges."""
    rng = np.random.default_rng(7)
    base = ns("2024-01-01 10:00")
    hour = 3600 * 10**9
    users = rng.integers(0, 3, 300).tolist()
    offsets = rng.integers(-50_000, 50_000, 300)  # ns around 10:00 and around 11:00 (the 1h window's far edge)
    times_ns = (base + offsets + rng.integers(0, 2, 300) * hour).tolist()
    values = rng.integers(1, 1000, 300).tolist()
    registry = write_source(tmp_path, users, times_ns, values, ts_type)
    ids = rng.integers(0, 3, 400).tolist()
    at_us = [(base + int(o) * 1000 + int(h) * hour) // 1000  # whole microseconds, as input times are
             for o, h in zip(rng.integers(-60, 60, 400), rng.integers(0, 3, 400), strict=True)]
    at = [datetime.fromtimestamp(us // 10**6, UTC).replace(microsecond=us % 10**6) for us in at_us]
    df = query(tmp_path, registry, ids, at)
    expected = reference(users, times_ns, values, ids, [us * 1000 for us in at_us])

    def same(a, b) -> bool:
        return a == b or (pd.isna(a) and pd.isna(b))

    got = [None if pd.isna(v) else int(v) for v in df["user.v"]]
    wrong = [i for i, (v, allowed) in enumerate(zip(got, expected["latest"], strict=True)) if v not in allowed]
    assert not wrong, [(at[i], ids[i], got[i], expected["latest"][i]) for i in wrong[:5]]
    for column in OUTPUT[1:]:
        wrong = [i for i, (a, b) in enumerate(zip(df[column], expected[column], strict=True)) if not same(a, b)]
        assert not wrong, (column, [(at[i], ids[i], df[column][i], expected[column][i]) for i in wrong[:5]])
    assert expected["user.n_1h"].nunique() > 2  # the windows were not all empty or all full
    assert sum(len(s) == 1 and s != {None} for s in expected["latest"]) > 100  # mostly one right answer


@pytest.mark.parametrize("ts_type", [pa.timestamp("us"), pa.timestamp("us", tz="UTC")])  # TIMESTAMP, TIMESTAMPTZ
def test_microsecond_and_date_sources_keep_their_whole_range(tmp_path, ts_type):
    """The rounding up applies only to rows with a sub-microsecond part: far dates still work, with a time zone
    (read as its UTC wall time, `plan.utc_source_time`) or without."""
    times = [datetime(1, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)]
    registry = write_source(tmp_path, [1, 1, 1], [0, 0, 0], [1, 2, 3], pa.timestamp("ns"))
    pq.write_table(pa.table({"user_id": pa.array([1, 1, 1], pa.int64()), "ts": pa.array(times, ts_type),
                             "v": pa.array([1, 2, 3], pa.int64())}), tmp_path / "events.parquet")
    df = query(tmp_path, registry, [1, 1], [datetime(2024, 6, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)])
    assert df["user.v"].tolist() == [2, 3] and df["user.n_1h"].tolist() == [0, 1]
