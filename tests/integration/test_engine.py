"""The DuckDB engine alone: point-in-time correctness against pandas, and real spilling."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobqueue.engine.duckdb_run import EngineLimits, QueryInterrupted, QueryRun
from jobqueue.engine.schema_check import SourceSchemaError
from jobqueue.engine.sources import ParquetSource
from jobqueue.inputs import to_arrow, with_times
from jobqueue.plan import plan_query
from jobqueue.registry import load_registry
from jobqueue.sample import sample_input, write_sample_store
from jobqueue.settings import Settings
from jobqueue.storage import Storage
from tests.reference import assert_same, reference

OUTPUT = ["user.f0", "user.f2", "user.logins", "user.segment"]


def parquet_sources(plan):
    storage = Storage(Settings())
    return {j.relation: ParquetSource(j.source, storage) for j in plan.joins}


def run(store, tmp_path, ids, times, memory=1 << 30, output=OUTPUT):
    plan = plan_query(["user.id"], output, load_registry(store.registry_path))
    table = with_times(to_arrow({"user.id": ids}), times, datetime.now(UTC))
    q = QueryRun(plan, EngineLimits(memory, 2, tmp_path / "spill"), parquet_sources(plan))
    result = q.run(table, tmp_path / "out" / "result.parquet")
    return q, result, pq.read_table(tmp_path / "out" / "result.parquet").to_pandas()


def test_matches_pandas_merge_asof(store, tmp_path):
    ids, times = sample_input(store.users, 5_000, seed=3)
    _, result, df = run(store, tmp_path, ids["user.id"], times)
    assert result.rows_out == 5_000 and result.spilled_bytes == 0
    assert_same(df, reference(store, ids["user.id"], times, OUTPUT))
    assert df["user.f0"].isna().any() and df["user.f0"].notna().any()  # both unmatched and matched rows


def test_rows_before_any_data_and_unknown_keys_are_null(store, tmp_path):
    import pyarrow as pa

    ids = pa.array([0, 10**9], type=pa.int64())
    times = pa.array([datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)])
    _, _, df = run(store, tmp_path, ids, times)
    assert df[["user.f0", "user.logins"]].isna().all().all()


def test_small_memory_limit_spills_and_stays_correct(big_store, tmp_path):
    ids, times = sample_input(big_store.users, 300_000, seed=5)
    q, result, df = run(big_store, tmp_path, ids["user.id"], times, memory=96 << 20)
    assert result.spilled_bytes > 0
    assert result.rows_out == 300_000
    assert not (tmp_path / "spill" / q.spill_dir.name).exists(), "per-query temp dir must be removed"
    assert_same(df, reference(big_store, ids["user.id"], times, OUTPUT))


def test_interrupt_before_start(store, tmp_path):
    plan = plan_query(["user.id"], ["user.f0"], load_registry(store.registry_path))
    q = QueryRun(plan, EngineLimits(1 << 30, 1, tmp_path), parquet_sources(plan))
    q.interrupt()
    table = with_times(to_arrow({"user.id": [1]}), None, datetime.now(UTC))
    with pytest.raises(QueryInterrupted):
        q.run(table, tmp_path / "r.parquet")
    assert not (tmp_path / "r.parquet").exists()


def test_missing_source_is_a_clear_error(tmp_path):
    s = write_sample_store(tmp_path / "s", users=10, snapshots=1)
    import shutil

    shutil.rmtree(s.root / "user_profile")
    with pytest.raises(FileNotFoundError, match="user_profile"):
        run(s, tmp_path, [1], None, output=["user.f0"])


AGGREGATES = ["user.txn_sum_30d", "user.txn_count_7d", "user.txn_mean_30d", "user.txn_min_30d",
              "user.txn_max_30d", "user.merchants_30d"]


def test_windowed_aggregations_match_a_brute_force_reference(store, tmp_path):
    ids, times = sample_input(store.users, 3_000, seed=17)
    output = ["user.f0", *AGGREGATES]
    _, result, df = run(store, tmp_path, ids["user.id"], times, output=output)
    expected = reference(store, ids["user.id"], times, output)
    assert_same(df, expected)
    assert (df["user.txn_count_7d"] > 0).any() and (df["user.txn_count_7d"] == 0).any()
    assert df["user.txn_sum_30d"].isna().any()  # no events in the window: null, while counts are 0


def test_aggregations_never_see_the_future(tmp_path):
    import pyarrow as pa

    s = write_sample_store(tmp_path / "s", users=1, snapshots=1, events_per_user=50)
    events = pa.parquet.read_table(s.root / "transactions").to_pandas().sort_values("ts")
    t = events["ts"].iloc[10].tz_localize("UTC")  # exactly at the 11th event
    _, _, df = run(s, tmp_path, [0], pa.array([t.to_pydatetime()]), output=["user.txn_count_7d", "user.txn_max_30d"])
    at = events["ts"].iloc[10]
    week = events[(events["ts"] > at - pd.Timedelta(days=7)) & (events["ts"] <= at)]
    month = events[(events["ts"] > at - pd.Timedelta(days=30)) & (events["ts"] <= at)]
    assert df["user.txn_count_7d"].iloc[0] == len(week)  # includes the event at t, nothing after it
    assert df["user.txn_max_30d"].iloc[0] == month["amount"].max()


def test_aggregations_spill_under_a_small_limit_with_the_same_answer(tmp_path):
    s = write_sample_store(tmp_path / "events", users=50_000, snapshots=1, features=1, events_per_user=40)
    ids, times = sample_input(s.users, 200_000, seed=23)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, free, expected = run(s, tmp_path / "a", ids["user.id"], times, output=AGGREGATES)
    _, capped, df = run(s, tmp_path / "b", ids["user.id"], times, memory=64 << 20, output=AGGREGATES)
    assert free.spilled_bytes == 0 and capped.spilled_bytes > 0
    pd.testing.assert_frame_equal(df, expected)


def test_spill_space_cap_fails_clearly(big_store, tmp_path):
    import duckdb

    ids, times = sample_input(big_store.users, 300_000, seed=5)
    plan = plan_query(["user.id"], OUTPUT, load_registry(big_store.registry_path))
    table = with_times(to_arrow({"user.id": ids["user.id"]}), times, datetime.now(UTC))
    q = QueryRun(plan, EngineLimits(96 << 20, 2, tmp_path / "spill", max_temp_directory_bytes=1 << 20),
                 parquet_sources(plan))
    with pytest.raises(duckdb.OutOfMemoryException, match="max_temp_directory_size"):
        q.run(table, tmp_path / "r.parquet")
    assert not (tmp_path / "spill" / q.spill_dir.name).exists()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"timestamp": "f0"}, ["source 'user_profile'", "timestamp column 'f0' is DOUBLE, not a timestamp"]),
        ({"features": {"f0": "nope"}}, ["feature 'f0' column 'nope' is not in the data", "it has: user_id, ts"]),
        ({"key": "ts"}, ["key column 'ts' is TIMESTAMP but the input's 'user.id' is BIGINT"]),
    ],
)
def test_registry_and_data_disagree(store, tmp_path, change, words):
    import yaml

    doc = store.read_registry()
    doc["namespaces"]["user"]["sources"][0].update(change)
    for src in doc["namespaces"]["user"]["sources"]:
        src["path"] = str(store.root / src["path"])
    path = tmp_path / "bad-registry.yaml"
    path.write_text(yaml.safe_dump(doc))
    plan = plan_query(["user.id"], ["user.f0"], load_registry(path))
    table = with_times(to_arrow({"user.id": [1]}), None, datetime.now(UTC))
    with pytest.raises(SourceSchemaError) as info:
        QueryRun(plan, EngineLimits(1 << 30, 1, tmp_path), parquet_sources(plan)).run(table, tmp_path / "r.parquet")
    for w in [f"registry {path}", "namespace 'user'", *words]:
        assert w in str(info.value)


def test_rows_read_are_reported_per_source(store, tmp_path):
    ids, times = sample_input(store.users, 1_000, seed=2)
    _, result, _ = run(store, tmp_path, ids["user.id"], times, output=["user.f0", "user.logins"])
    rows = {name: facts["rows_read"] for name, facts in result.sources.items()}
    assert set(rows) == {"user_profile", "user_activity"}
    assert all(0 < n <= store.feature_rows for n in rows.values()), rows
    scanned = {name: facts["bytes_scanned"] for name, facts in result.sources.items()}
    assert all(n and n >= 8 * rows[name] for name, n in scanned.items()), scanned  # at least one 8-byte column


CONSUMER_QUERY = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from pathlib import Path

import consumer.worker  # noqa: F401  everything a consumer process imports at start
from jobqueue.engine.execute import PreparedQuery
from jobqueue.models import QueryJob
from jobqueue.registry import load_registry
from jobqueue.settings import Settings

store, staged, home = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
settings = Settings(home=home, results_uri=str(home / "results"), spill_directory=home / "spill", query_threads=1)
job = QueryJob(job_id="j1.s0", environment="t", resource_group="default", output=["user.f0", "user.f2"],
               input_uri=staged, input_columns=["user.id"], input_rows=3, submitted_at=datetime.now(UTC),
               parent_id="j1")
outcome = PreparedQuery(job, load_registry(store / "registry.yaml"), settings, "c").execute()
print(outcome.summary.rows_out, sorted(m for m in ("pyarrow", "pandas", "numpy", "polars") if m in sys.modules))
"""


def test_a_consumer_runs_a_local_query_without_loading_pyarrow_or_pandas(store, tmp_path):
    """A consumer's resident memory counts every library it has loaded (a sharded query's consumers are measured by
    their peak RSS, bench/sharded.py): pyarrow, numpy and pandas added ~120 MiB to an idle consumer, while a query
    on local Parquet is DuckDB's alone. They are loaded where an object store or an Arrow input needs them."""
    import subprocess
    import sys

    staged = tmp_path / "input.parquet"
    pq.write_table(with_times(to_arrow({"user.id": [1, 2, 3]}), None, datetime.now(UTC)), staged)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", CONSUMER_QUERY, str(store.registry_path.parent), str(staged),
                          str(tmp_path / "home")], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3 []"


def _nodes(node):
    yield node
    for child in node.get("children", []):
        yield from _nodes(child)


def test_a_shards_pruned_source_side_is_estimated_below_the_whole_source(store, tmp_path):
    """DuckDB sizes the ASOF join's hash partitions from its estimate of the pruned source side. Estimated at the
    whole source, a shard's side (a fraction of the source) sat in near-empty partitions: its sort took ~123 instead
    of ~78 B/row (bench/sharded.py's shards: 384 -> 244 MB). The plan's `IS NOT NULL`, which drops no row that
    could match, makes the estimate a fifth of the source; and no query's instance prefetches Parquet."""
    import json

    from jobqueue.engine.warm import InstanceSettings, connect

    plan = plan_query(["user.id"], ["user.f0"], load_registry(store.registry_path), keep_row=True)
    con = connect(InstanceSettings(1 << 30, 2, tmp_path, False), tmp_path / "spill")
    assert con.execute("SELECT current_setting('disable_parquet_prefetching')").fetchall() == [(True,)]
    ids, times = sample_input(store.users, 500, seed=7)
    con.register("input", with_times(to_arrow({"user.id": ids["user.id"]}), times, datetime.now(UTC)))
    for relation, source in parquet_sources(plan).items():
        source.attach(con, relation)
    (relation,) = parquet_sources(plan)
    source_rows = con.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0]
    explained = json.loads(con.execute(f"EXPLAIN (FORMAT json) {plan.sql}").fetchall()[0][1])
    (asof,) = [n for root in explained for n in _nodes(root) if n.get("name") == "ASOF_JOIN"]
    estimate = int(asof["children"][1]["extra_info"]["Estimated Cardinality"])
    assert 0 < estimate <= source_rows // 4
    # the side sorted holds no row later than its key's latest input time: none of them can be an answer
    con.execute("SET enable_profiling = 'no_output'")
    con.execute(f"SELECT count(*) FROM ({plan.sql})").fetchall()
    profile = json.loads(con.get_profiling_information(format="json"))
    (asof,) = [n for root in profile["operator"] for n in _nodes(root) if n.get("name") == "ASOF_JOIN"]
    sorted_rows = asof["children"][1]["intermediate_rows"]
    src = plan.joins[0].source
    latest = con.execute(f"""SELECT count(*) FROM {relation} AS s JOIN (SELECT "user.id" AS k, max(__ts__) AS m
                             FROM input GROUP BY ALL) AS k ON s.{src.key} = k.k AND s.{src.timestamp} <= m
                          """).fetchall()[0][0]
    assert sorted_rows == latest
    con.close()
