"""A DuckDB instance started ahead (`jobqueue.engine.warm`) serves exactly one query, with its own temp directory."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pytest

from jobqueue.engine import warm
from jobqueue.engine.duckdb_run import EngineLimits, QueryRun
from jobqueue.engine.execute import table_sources
from jobqueue.models import QueryJob
from jobqueue.plan import plan_query
from jobqueue.registry import load_registry
from jobqueue.storage import Storage
from tests.helpers import eventually


@pytest.fixture
def spares() -> Iterator[warm._Spares]:
    spares = warm.SPARES
    spares.discard()  # one left by a consumer of an earlier test in this process
    was, spares.enabled = spares.enabled, True
    yield spares
    spares.enabled = was
    spares.discard()


async def test_a_spare_instance_serves_one_query_then_closes(spares, settings, tmp_path):
    limits = EngineLimits(1 << 30, 1, tmp_path / "spill")
    spares.prepare(warm.InstanceSettings(limits.memory_limit_bytes, limits.threads, limits.spill_root))
    await eventually(lambda: spares._spare is not None, timeout=30, what="the spare instance")
    spare = spares._spare
    assert spare is not None

    registry = load_registry(settings.registry_path)
    plan = plan_query(["user.id"], ["user.f0"], registry)
    table = pa.table({"user.id": pa.array([1, 2], pa.int64()),
                      "__ts__": pa.array([1_720_000_000_000_000] * 2, pa.timestamp("us", tz="UTC")),
                      "__row__": pa.array([0, 1], pa.int64())})

    job = QueryJob(job_id="j", environment="e", resource_group="g", output=["user.f0"], input_uri="/x",
                   input_columns=["user.id"], input_rows=2, submitted_at=datetime.now(UTC))

    def query_run() -> QueryRun:
        return QueryRun(plan, limits, table_sources(plan, job, Storage(settings)))

    first = query_run()
    first.take_spare()  # as `PreparedQuery.execute` does, in the query's thread
    assert first.spill_dir == spare.spill_dir  # took the spare, with the temp directory it was started with
    first.run(table, tmp_path / "one.parquet")
    with pytest.raises(duckdb.ConnectionException):
        spare.con.execute("SELECT 1")  # closed after its query: never reused

    second = query_run()  # no spare was started again: it connects itself, elsewhere
    second.take_spare()
    assert second.spill_dir != first.spill_dir
    assert second.run(table, tmp_path / "two.parquet").rows_out == 2

