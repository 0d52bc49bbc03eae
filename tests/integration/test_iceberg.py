"""Iceberg sources through pyiceberg: current and pinned snapshots, pruning by the input's time range."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from jobqueue import JobQueueClient
from jobqueue.sample import sample_input
from tests.iceberg_rest import RestCatalogServer

OUTPUT = ["user.f0", "user.f1"]


@pytest.fixture
def iceberg(tmp_path, store):
    """`db.user_profile` (month-partitioned) with two snapshots: the sample values, then +100."""
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.transforms import MonthTransform

    catalog_props = {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": f"file://{tmp_path}/wh"}
    catalog = SqlCatalog("jobqueue", **{k: v for k, v in catalog_props.items() if k != "type"})
    catalog.create_namespace("db")
    data = pq.read_table(store.root / "user_profile").select(["user_id", "ts", "f0", "f1"])
    table = catalog.create_table("db.user_profile", schema=data.schema)
    with table.update_spec() as spec:
        spec.add_field("ts", MonthTransform(), "ts_month")
    table.append(data)
    first = table.current_snapshot().snapshot_id
    bumped = data.set_column(2, "f0", pc.add(data["f0"], 100.0))
    table.overwrite(bumped)
    return {"catalog": catalog_props, "first": first, "current": table.current_snapshot().snapshot_id,
            "files": len(list(table.scan().plan_files()))}


def registry(tmp_path, iceberg, snapshot_id=None):
    source = {"name": "user_profile", "kind": "iceberg", "table": "db.user_profile", "catalog": iceberg["catalog"],
              "key": "user_id", "timestamp": "ts", "features": ["f0", "f1"]}
    if snapshot_id:
        source["snapshot_id"] = snapshot_id
    path = tmp_path / f"registry-{snapshot_id or 'current'}.yaml"
    path.write_text(yaml.safe_dump({"namespaces": {"user": {"primary_key": "id", "sources": [source]}}}))
    return path


def run(settings, registry_path, ids, times):
    with JobQueueClient(settings.model_copy(update={"registry_path": registry_path})) as client:
        result = client.offline_query(ids, OUTPUT, times, run_asynchronously=False)
        return result.to_arrow(), result.performance_summary


def test_current_and_pinned_snapshots(settings, store, tmp_path, iceberg):
    ids, times = sample_input(store.users, 2_000, seed=41)
    parquet, _ = run(settings, store.registry_path, ids, times)  # the same data as plain Parquet
    current, summary = run(settings, registry(tmp_path, iceberg), ids, times)
    old, old_summary = run(settings, registry(tmp_path, iceberg, iceberg["first"]), ids, times)
    assert summary.sources["user_profile"]["snapshot_id"] == iceberg["current"]
    assert old_summary.sources["user_profile"]["snapshot_id"] == iceberg["first"]
    assert old.equals(parquet)
    assert current.column("user.f1").equals(parquet.column("user.f1"))
    assert pc.all(pc.equal(current.column("user.f0"), pc.add(parquet.column("user.f0"), 100.0))).as_py()


def test_files_after_the_latest_input_time_are_pruned(settings, store, tmp_path, iceberg):
    ids = {"user.id": pa.array(range(100), pa.int64())}
    times = pa.array([datetime(2024, 2, 10, tzinfo=UTC)] * 100)
    parquet, _ = run(settings, store.registry_path, ids, times)
    result, summary = run(settings, registry(tmp_path, iceberg), ids, times)
    facts = summary.sources["user_profile"]
    assert facts["files"] < iceberg["files"], facts  # only the January and February partitions
    assert 0 < facts["rows_read"] < store.feature_rows, facts
    assert result.column("user.f1").equals(parquet.column("user.f1"))


def test_missing_table_is_a_clear_error(settings, store, tmp_path, iceberg):
    path = registry(tmp_path, iceberg)
    path.write_text(path.read_text().replace("db.user_profile", "db.nope"))
    with pytest.raises(FileNotFoundError, match="Iceberg table 'db.nope' not found"):
        run(settings, path, {"user.id": [1]}, None)


def test_the_rest_catalog(settings, store, tmp_path, iceberg):
    """The same table through pyiceberg's REST client: the registry says `type: rest` and the catalog URI."""
    from pyiceberg.catalog.sql import SqlCatalog

    props = {k: v for k, v in iceberg["catalog"].items() if k != "type"}
    server = RestCatalogServer(SqlCatalog("jobqueue", **props))
    try:
        rest = {**iceberg, "catalog": {"type": "rest", "uri": server.uri}}
        ids, times = sample_input(store.users, 2_000, seed=43)
        via_sql, _ = run(settings, registry(tmp_path, iceberg), ids, times)
        via_rest, summary = run(settings, rest_registry(tmp_path, rest), ids, times)
        assert via_rest.equals(via_sql)
        assert summary.sources["user_profile"]["snapshot_id"] == iceberg["current"]
        assert any(r.startswith("/v1/namespaces/db/tables/user_profile") for r in server.requests), server.requests
        missing = rest_registry(tmp_path, rest, table="db.nope")
        with JobQueueClient(settings.model_copy(update={"registry_path": missing})) as client, \
                pytest.raises(Exception, match="Iceberg table 'db.nope' not found"):
            client.offline_query(ids, OUTPUT, times, run_asynchronously=False)
    finally:
        server.close()


def rest_registry(tmp_path, iceberg, table="db.user_profile"):
    source = {"name": "user_profile", "kind": "iceberg", "table": table, "catalog": iceberg["catalog"],
              "key": "user_id", "timestamp": "ts", "features": ["f0", "f1"]}
    path = tmp_path / f"registry-rest-{table}.yaml"
    path.write_text(yaml.safe_dump({"namespaces": {"user": {"primary_key": "id", "sources": [source]}}}))
    return path


def test_a_table_under_another_catalog_name_is_found_with_name_and_the_error_says_so(settings, store, tmp_path):
    """pyiceberg's SQL catalog keeps each catalog name's tables apart: a table created under `lake` is not
    seen under the default name `jobqueue`. The error names the catalog, says `name:`, and lists what it has."""
    from pyiceberg.catalog.sql import SqlCatalog

    props = {"uri": f"sqlite:///{tmp_path}/lake.db", "warehouse": f"file://{tmp_path}/lake"}
    lake = SqlCatalog("lake", **props)
    lake.create_namespace("db")
    data = pq.read_table(store.root / "user_profile").select(["user_id", "ts", "f0", "f1"])
    lake.create_table("db.user_profile", schema=data.schema).append(data)
    SqlCatalog("jobqueue", **props).create_namespace("other")  # under the default name: another namespace
    unnamed = registry(tmp_path, {"catalog": {"type": "sql", **props}})
    with pytest.raises(FileNotFoundError) as info:
        run(settings, unnamed, {"user.id": [1]}, None)
    message = str(info.value)
    assert "Iceberg table 'db.user_profile' not found in catalog 'jobqueue'" in message, message
    assert "has no `name:`" in message and "has namespaces other and tables (none)" in message, message
    named = registry(tmp_path, {"catalog": {"type": "sql", "name": "lake", **props}}, snapshot_id=None)
    ids, times = sample_input(store.users, 200, seed=47)
    result, summary = run(settings, named, ids, times)
    assert result.num_rows == 200 and summary.sources["user_profile"]["kind"] == "iceberg"
