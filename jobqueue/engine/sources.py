"""Table sources: how a registry source becomes a relation DuckDB can scan.

    TableSource (Protocol)  attach(con, relation) -> facts for the performance summary
    ├── ParquetSource       local files: DuckDB's own read_parquet; object stores: a pyarrow
    │                       dataset DuckDB scans with projection and filter pushdown; a shard reads
    │                       only its buckets of a source laid out in key buckets (`buckets`)
    └── IcebergSource       pyiceberg plans the scan (snapshot, row filter on the input's time
                            range, so files outside it are pruned) and DuckDB reads the data files

Warehouse-backed sources (Snowflake, BigQuery, ...) would be a third implementation.
DuckDB's httpfs/iceberg extensions are not used: bytes from object stores come through pyarrow,
and through the consumer's scan cache when it has one (`Storage.resolve_source`). Local files are
read directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import duckdb

from jobqueue.engine.buckets import read_layout
from jobqueue.models import ShardOf
from jobqueue.plan import literal, quote, utc_source_time
from jobqueue.registry import FeatureSource
from jobqueue.storage import Storage, is_local, local_path

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table


DEFAULT_CATALOG_NAME = "jobqueue"  # pyiceberg's catalog name unless the source's `catalog:` block has `name:`


def attach_in_utc(con: duckdb.DuckDBPyConnection, source: TableSource, relation: str, time_column: str
                  ) -> tuple[dict[str, Any], dict[str, str]]:
    """Attach `source` as `relation`; its facts, and its columns' types (as the source has them, for
    `schema_check`). A time column with a time zone is given as its UTC wall time (`plan.utc_source_time`): the
    plan compares TIMESTAMPs, and DuckDB's own cast from a time zone goes through ICU's calendar, ~40 ns a row, for
    every row of every scan. Then the source is renamed `scan_<relation>` (relations are `src_<source>`: no name
    clashes) and `relation` is a view over it (DuckDB inlines it: filters still reach the scan); other sources
    cost no more than the one DESCRIBE the schema check needs anyway (a view costs ~1 ms a source)."""
    facts = source.attach(con, relation)
    columns = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {quote(relation)}").fetchall()}
    in_utc = utc_source_time(quote(time_column), columns.get(time_column, ""))
    if in_utc is not None:
        scan = f"scan_{relation}"
        con.execute(f"ALTER VIEW {quote(relation)} RENAME TO {quote(scan)}")
        con.execute(f"CREATE VIEW {quote(relation)} AS SELECT * REPLACE ({in_utc} AS {quote(time_column)}) "
                    f"FROM {quote(scan)}")
    return facts, columns


class TableSource(Protocol):
    def attach(self, con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, Any]:
        """Make `relation` scannable on `con`; return facts for the summary (e.g. a snapshot id)."""
        ...


@dataclass(frozen=True)
class TimeBounds:
    """The input's as-of time range, and how far back windowed aggregations look from it."""

    earliest: datetime
    latest: datetime
    lookback_seconds: int | None = None  # None: latest-value features need any older row


def read_parquet_sql(paths: list[str]) -> str:
    return f"read_parquet([{', '.join(literal(p) for p in paths)}], hive_partitioning = false)"


@dataclass
class ParquetSource:
    source: FeatureSource
    storage: Storage
    shard: ShardOf | None = None  # a shard of a query sharded by this source's key: the rows it needs

    def attach(self, con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, Any]:
        if self.shard is not None and (facts := self._attach_buckets(con, relation, self.shard)) is not None:
            return facts
        path = self.source.path
        if is_local(path):
            p = local_path(path)
            if p.is_dir():
                path = str(p / "**" / "*.parquet")
            elif not any(ch in path for ch in "*?[") and not p.exists():
                raise FileNotFoundError(f"source {self.source.name!r}: {path} does not exist")
            con.execute(f"CREATE VIEW {quote(relation)} AS SELECT * FROM {read_parquet_sql([path])}")
        else:
            con.register(relation, self.storage.parquet_dataset(path))
        return {"kind": "parquet", "path": self.source.path}

    def _attach_buckets(self, con: duckdb.DuckDBPyConnection, relation: str, shard: ShardOf) -> dict[str, Any] | None:
        """The shard's buckets alone, when the source is a directory laid out in key buckets that line up with the
        shards (`jobqueue.engine.buckets`); None: read it as any other source."""
        path = self.source.path.rstrip("/")
        layout = read_layout(self.storage, path)  # None for a file or a glob too: no manifest below it
        chosen = layout.shard_files(self.source.key, shard) if layout is not None else None
        if layout is None or chosen is None:
            return None
        buckets, names = chosen
        if is_local(path):
            con.execute(f"CREATE VIEW {quote(relation)} AS SELECT * FROM "
                        f"{read_parquet_sql([str(local_path(path) / name) for name in names])}")
        else:
            import pyarrow.dataset as pads

            fs, root = self.storage.resolve_source(path)
            con.register(relation, pads.dataset([f"{root}/{name}" for name in names], filesystem=fs, format="parquet"))
        return {"kind": "parquet", "path": self.source.path, "buckets": layout.buckets, "buckets_read": len(buckets)}


@dataclass
class IcebergSource:
    source: FeatureSource
    storage: Storage
    bounds: TimeBounds | None

    def load_table(self) -> Table:
        from pyiceberg.catalog import load_catalog
        from pyiceberg.exceptions import NoSuchTableError

        props = {k: str(v) for k, v in (self.source.catalog or {}).items()}
        s = self.storage.settings
        if s.s3_endpoint_url:
            props.setdefault("s3.endpoint", s.s3_endpoint_url)
        if s.s3_region:
            props.setdefault("s3.region", s.s3_region)
        if s.s3_access_key_id and s.s3_secret_access_key:
            props.setdefault("s3.access-key-id", s.s3_access_key_id)
            props.setdefault("s3.secret-access-key", s.s3_secret_access_key.get_secret_value())
        name = props.pop("name", None)
        catalog = load_catalog(name or DEFAULT_CATALOG_NAME, **props)
        assert self.source.table is not None  # FeatureSource requires it for iceberg sources
        try:
            return catalog.load_table(self.source.table)
        except NoSuchTableError as e:
            raise FileNotFoundError(
                f"source {self.source.name!r}: Iceberg table {self.source.table!r} not found in catalog "
                f"{catalog.name!r} ({'its `name:`' if name else 'the default: the `catalog:` block has no `name:`'}; "
                f"a table created under another catalog name is not seen under this one); {_catalog_contents(catalog)}"
            ) from e

    def row_filter(self) -> BooleanExpression:
        """Rows that can matter for this query's time range; the rest, and whole files, are pruned."""
        from pyiceberg.expressions import AlwaysTrue, And, GreaterThan, LessThanOrEqual

        if self.bounds is None:
            return AlwaysTrue()
        ts = self.source.timestamp  # literals in microseconds since the epoch (naive columns are UTC)
        expr: BooleanExpression = LessThanOrEqual(term=ts, value=int(self.bounds.latest.timestamp() * 1_000_000))
        if self.bounds.lookback_seconds is not None:
            start = self.bounds.earliest.timestamp() - self.bounds.lookback_seconds
            expr = And(expr, GreaterThan(term=ts, value=int(start * 1_000_000)))
        return expr

    def attach(self, con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, Any]:
        table = self.load_table()
        pinned = self.source.snapshot_id
        snapshot = table.snapshot_by_id(pinned) if pinned else table.current_snapshot()
        if self.source.snapshot_id and snapshot is None:
            raise FileNotFoundError(f"source {self.source.name!r}: snapshot {self.source.snapshot_id} does not exist")
        facts: dict[str, Any] = {"kind": "iceberg", "table": self.source.table,
                                 "snapshot_id": snapshot.snapshot_id if snapshot else None}
        if snapshot is None:  # an empty table: an empty relation with the table's columns
            con.register(relation, table.schema().as_arrow().empty_table())
            return {**facts, "files": 0}
        scan = table.scan(row_filter=self.row_filter(), snapshot_id=snapshot.snapshot_id)
        tasks = list(scan.plan_files())
        if any(t.delete_files for t in tasks):
            # merge-on-read deletes: let pyiceberg apply them rather than read deleted rows
            con.register(relation, scan.to_arrow())
            return {**facts, "files": len(tasks), "delete_files_applied": True}
        paths = [t.file.file_path for t in tasks]
        if not paths:
            con.register(relation, table.schema().as_arrow().empty_table())
        elif all(is_local(p) for p in paths):
            con.execute(f"CREATE VIEW {quote(relation)} AS SELECT * FROM "
                        f"{read_parquet_sql([str(local_path(p)) for p in paths])}")
        else:
            import pyarrow.dataset as pads

            fs, _ = self.storage.resolve_source(paths[0])
            con.register(relation, pads.dataset([self.storage.resolve_source(p)[1] for p in paths], filesystem=fs,
                                                format="parquet"))
        return {**facts, "files": len(paths)}


def _catalog_contents(catalog: Any, shown: int = 10) -> str:
    """What `catalog` holds, for an error message: its namespaces and their tables (best effort)."""
    try:
        namespaces = [".".join(ns) for ns in catalog.list_namespaces()]
        if not namespaces:
            return f"catalog {catalog.name!r} has no namespaces"
        tables = [".".join(t) for ns in namespaces[:shown] for t in catalog.list_tables(ns)]
    except Exception as e:  # the listing is only a hint
        return f"its namespaces could not be listed ({type(e).__name__})"
    more = f" (first {shown})" if len(tables) > shown else ""
    return (f"catalog {catalog.name!r} has namespaces {', '.join(namespaces[:shown])} and tables{more} "
            f"{', '.join(tables[:shown]) or '(none)'}")


def make_source(source: FeatureSource, storage: Storage, bounds: TimeBounds | None,
                shard: ShardOf | None = None) -> TableSource:
    """The table source of `source`; `shard`: the query is a shard split by this source's key (its namespace's)."""
    if source.kind == "iceberg":
        return IcebergSource(source, storage, bounds)
    return ParquetSource(source, storage, shard)
