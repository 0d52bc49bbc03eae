"""Run one planned query on DuckDB: own connection, own spill directory, measured.

Blocking code, meant for a worker thread (`asyncio.to_thread`). Each query gets a fresh
in-memory connection with `memory_limit`, `threads` and a private `temp_directory` under the
spill root, removed afterwards. The result goes straight from DuckDB to Parquet (`COPY`), so
rows never pass through Python. Spill is read from DuckDB's profiling (`peak_temp_dir_size`).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from consumer.disk_space import spill_dir_name
from consumer.schema_check import check_source
from consumer.sources import TableSource
from jobqueue.plan import QueryPlan, literal

ProgressCallback = Callable[[float], None]


@dataclass(frozen=True)
class EngineLimits:
    memory_limit_bytes: int
    threads: int
    spill_root: Path
    max_temp_directory_bytes: int | None = None


@dataclass(frozen=True)
class EngineResult:
    rows_out: int
    spilled_bytes: int
    bytes_written: int
    peak_memory_bytes: int
    rows_scanned: int
    bytes_read: int
    execution_seconds: float
    sources: dict[str, dict[str, Any]]


class QueryInterrupted(RuntimeError):
    pass


class QueryRun:
    """One query execution. `run()` blocks; `interrupt()` may be called from another thread."""

    def __init__(self, plan: QueryPlan, limits: EngineLimits, sources: Mapping[str, TableSource]) -> None:
        self.plan = plan
        self.limits = limits
        self.sources = sources  # relation name -> table source
        self.spill_dir = limits.spill_root / spill_dir_name()  # names its process: see disk_space.sweep_spill
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._interrupted = False

    def progress(self) -> float:
        """Fraction done in [0, 1] while running; 0 when DuckDB cannot tell yet."""
        with self._lock:
            con = self._con
        if con is None:
            return 0.0
        try:
            value = con.query_progress()
        except duckdb.Error:
            return 0.0
        return max(0.0, min(1.0, value / 100.0)) if value >= 0 else 0.0

    def interrupted(self) -> bool:
        return self._interrupted

    def interrupt(self) -> None:
        with self._lock:
            self._interrupted = True
            if self._con is not None:
                self._con.interrupt()

    def run(self, input_data: pa.Table | str, result_path: Path) -> EngineResult:
        """Execute the plan over `input_data` (Arrow table or local Parquet path) into `result_path`."""
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        result_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = result_path.with_name(f".{result_path.name}.{uuid.uuid4().hex}.tmp")
        con = duckdb.connect(
            ":memory:",
            config={
                "memory_limit": f"{self.limits.memory_limit_bytes}B",
                "threads": self.limits.threads,
                "temp_directory": str(self.spill_dir),
            },
        )
        try:
            con.execute("SET TimeZone = 'UTC'")
            if self.limits.max_temp_directory_bytes:  # after temp_directory, which resets it
                con.execute(f"SET max_temp_directory_size = '{self.limits.max_temp_directory_bytes}B'")
            con.execute("SET enable_progress_bar = true")
            con.execute("SET enable_progress_bar_print = false")
            if isinstance(input_data, pa.Table):
                con.register("input", input_data)
            else:
                con.execute(f"CREATE VIEW input AS SELECT * FROM read_parquet({literal(input_data)})")
            facts = {join.source.name: self.sources[join.relation].attach(con, join.relation)
                     for join in self.plan.joins}
            input_types = {r[0]: r[1] for r in con.execute("DESCRIBE SELECT * FROM input").fetchall()}
            for join in self.plan.joins:
                check_source(con, join, self.plan.registry_origin, input_types[join.namespace.key_feature])
            con.execute("SET enable_profiling = 'no_output'")
            with self._lock:
                if self._interrupted:
                    raise QueryInterrupted("query was interrupted before it started")
                self._con = con
            started = time.perf_counter()
            try:
                row = con.execute(
                    f"COPY ({self.plan.sql}) TO {literal(str(tmp))} (FORMAT parquet, COMPRESSION zstd)"
                ).fetchone()
            except duckdb.InterruptException as e:
                raise QueryInterrupted("query was interrupted") from e
            elapsed = time.perf_counter() - started
            profile = json.loads(con.get_profiling_information(format="json"))
            tmp.replace(result_path)
            for stale in result_path.parent.glob(f".{result_path.name}.*.tmp"):  # from attempts that were killed
                stale.unlink(missing_ok=True)
        finally:
            with self._lock:
                self._con = None
            con.close()
            tmp.unlink(missing_ok=True)
            shutil.rmtree(self.spill_dir, ignore_errors=True)
        system, io, query = profile.get("system", {}), profile.get("io", {}), profile.get("query", {})
        return EngineResult(
            rows_out=int(row[0]) if row else 0,
            spilled_bytes=int(system.get("peak_temp_dir_size", 0)),
            bytes_written=int(io.get("total_bytes_written", 0)),
            peak_memory_bytes=int(system.get("peak_buffer_memory", 0)),
            rows_scanned=int(query.get("total_rows_scanned", 0)),
            bytes_read=int(io.get("total_bytes_read", 0)),
            sources=_with_scan_counts(facts, profile, self.plan),
            execution_seconds=elapsed,
        )


def _scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node] if node.get("type") == "TABLE_SCAN" else []
    for child in node.get("children", []):
        found += _scans(child)
    return found


def _with_scan_counts(facts: dict[str, dict[str, Any]], profile: dict[str, Any], plan: QueryPlan
                      ) -> dict[str, dict[str, Any]]:
    """Add rows read and bytes scanned per source from DuckDB's operator profile (`bytes_scanned`: the
    decoded bytes its scans produced). Parquet scans name their files; scans through Arrow (object
    stores) are matched by the columns they project."""
    scans = [s for op in profile.get("operator", []) for s in _scans(op)]
    by_source: dict[str, int] = {}
    bytes_by_source: dict[str, int] = {}
    columns = {
        j.source.name: {j.source.key, j.source.timestamp, *j.source.features.values(),
                        *(a.column for a in j.source.aggregations.values() if a.column)}
        for j in plan.joins
    }
    for scan in scans:
        info = scan.get("extra_info", {})
        rows = int(scan.get("operator_rows_scanned") or scan.get("rows_scanned") or 0) or int(
            scan.get("intermediate_rows", 0)
        )
        files = str(info.get("Filename(s)", ""))
        owners = [j.source.name for j in plan.joins
                  if j.source.path and files.startswith(j.source.path.split("*", 1)[0].rstrip("/"))]
        if not owners:  # Arrow scans (object stores) and Iceberg file lists: match by projected columns
            projected = set(info.get("Projections", []))
            owners = [name for name, cols in columns.items() if projected and projected <= cols]
        if len(owners) == 1:
            by_source[owners[0]] = by_source.get(owners[0], 0) + rows
            size = int(scan.get("intermediate_size_bytes") or 0)
            bytes_by_source[owners[0]] = bytes_by_source.get(owners[0], 0) + size
    return {name: {**f, "rows_read": by_source.get(name), "bytes_scanned": bytes_by_source.get(name)}
            for name, f in facts.items()}
