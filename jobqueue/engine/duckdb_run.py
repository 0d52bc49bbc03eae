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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import structlog

from jobqueue.engine.disk_space import spill_dir_name
from jobqueue.engine.schema_check import check_source
from jobqueue.engine.sources import TableSource, attach_in_utc
from jobqueue.engine.warm import SPARES, Instance, InstanceSettings, connect
from jobqueue.plan import QueryPlan, literal, reorder_sql
from jobqueue.sizes import format_bytes

if TYPE_CHECKING:  # an Arrow input comes from a caller that has pyarrow loaded; a local Parquet path needs none
    import pyarrow as pa

ProgressCallback = Callable[[float], None]
log = structlog.stdlib.get_logger("jobqueue.engine")


@dataclass(frozen=True)
class EngineLimits:
    memory_limit_bytes: int
    threads: int
    spill_root: Path
    max_temp_directory_bytes: int | None = None
    memory_hint: str = "raise the memory limit"  # how to give queries more memory, for the out-of-memory error


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
    oom_retries: int = 0  # 1 when the first run ran out of memory and the retry succeeded
    retry_threads: int | None = None  # the retry's threads
    reorder_seconds: float = 0.0  # the retry's second pass, which restores input order


class QueryInterrupted(RuntimeError):
    pass


class QueryOutOfMemory(RuntimeError):
    """DuckDB ran out of memory on the first run and on the retry with fewer threads."""

    def __init__(self, memory_limit_bytes: int, threads: int, error: Exception, hint: str) -> None:
        super().__init__(
            f"out of memory under DuckDB memory_limit {format_bytes(memory_limit_bytes)} ({memory_limit_bytes} "
            f"bytes), also on the retry with {threads} thread(s) and preserve_insertion_order=false; "
            f"to give queries more memory, {hint}. DuckDB said: {error}"
        )
        self.memory_limit_bytes = memory_limit_bytes
        self.threads = threads


class QueryRun:
    """One query execution. `run()` blocks; `interrupt()` may be called from another thread."""

    def __init__(self, plan: QueryPlan, limits: EngineLimits, sources: Mapping[str, TableSource]) -> None:
        self.plan = plan
        self.limits = limits
        self.sources = sources  # relation name -> table source
        self.spill_dir = limits.spill_root / spill_dir_name()  # names its process: see disk_space.sweep_spill
        self._spare: Instance | None = None
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
        """Execute the plan over `input_data` (Arrow table or local Parquet path) into `result_path`. A plan whose
        rows need no order (a shard's, `QueryPlan.in_input_order` False) runs with `preserve_insertion_order = false`.

        When DuckDB runs out of memory (not out of spill space), the query is run once more with half
        the threads and `preserve_insertion_order = false`, unsorted into the spill directory with
        `__row__`, and a second pass writes it in input order. `QueryOutOfMemory` if that fails too."""
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        result_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = result_path.with_name(f".{result_path.name}.{uuid.uuid4().hex}.tmp")
        try:
            try:
                result = self._attempt(input_data, self.plan.sql, tmp, self.limits.threads, True)
            except duckdb.OutOfMemoryException as e:
                if not is_memory_exhausted(e):
                    raise
                result = self._retry(input_data, tmp, e)
            tmp.replace(result_path)
            for stale in result_path.parent.glob(f".{result_path.name}.*.tmp"):  # from attempts that were killed
                stale.unlink(missing_ok=True)
        finally:
            self.discard_spare()
            tmp.unlink(missing_ok=True)
            shutil.rmtree(self.spill_dir, ignore_errors=True)
        return result

    def _instance_settings(self, threads: int, preserve_order: bool) -> InstanceSettings:
        return InstanceSettings(self.limits.memory_limit_bytes, threads, self.limits.spill_root, preserve_order)

    def take_spare(self) -> None:
        """Run on the instance this process started ahead (`warm`), if its settings are the first attempt's, in
        its temp directory. Blocks while it is starting: call it in the query's thread, before `run`."""
        self._spare = SPARES.take(self._instance_settings(self.limits.threads, True))
        if self._spare is not None:
            self.spill_dir = self._spare.spill_dir

    def discard_spare(self) -> None:
        """Close the spare instance this query took and did not use (it failed before running, or never ran)."""
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.con.close()

    def _retry(self, input_data: pa.Table | str, tmp: Path, first: duckdb.OutOfMemoryException) -> EngineResult:
        threads = retry_threads(self.limits.threads)
        log.warning("query ran out of memory; retrying once with fewer threads and preserve_insertion_order=false",
                    memory_limit_bytes=self.limits.memory_limit_bytes, threads=threads, error=str(first))
        if not self.plan.in_input_order:  # a shard's rows: no second pass to restore an order they never had
            try:
                query = self._attempt(input_data, self.plan.sql, tmp, threads, False)
            except duckdb.OutOfMemoryException as e:
                if not is_memory_exhausted(e):
                    raise
                raise QueryOutOfMemory(self.limits.memory_limit_bytes, threads, e, self.limits.memory_hint) from e
            return replace(query, oom_retries=1, retry_threads=threads)
        unordered = self.spill_dir / f"unordered-{uuid.uuid4().hex}.parquet"
        try:
            query = self._attempt(input_data, self.plan.unordered_sql, unordered, threads, False)
            ordered = self._attempt(None, reorder_sql(str(unordered), self.plan.output_columns), tmp, threads, False)
        except duckdb.OutOfMemoryException as e:
            if not is_memory_exhausted(e):
                raise
            raise QueryOutOfMemory(self.limits.memory_limit_bytes, threads, e, self.limits.memory_hint) from e
        finally:
            unordered.unlink(missing_ok=True)
        return replace(
            query,
            rows_out=ordered.rows_out,
            spilled_bytes=max(query.spilled_bytes, ordered.spilled_bytes),
            bytes_written=query.bytes_written + ordered.bytes_written,
            peak_memory_bytes=max(query.peak_memory_bytes, ordered.peak_memory_bytes),
            bytes_read=query.bytes_read + ordered.bytes_read,
            execution_seconds=query.execution_seconds + ordered.execution_seconds,
            oom_retries=1,
            retry_threads=threads,
            reorder_seconds=ordered.execution_seconds,
        )

    def _attempt(self, input_data: pa.Table | str | None, sql: str, out: Path, threads: int,
                 preserve_order: bool) -> EngineResult:
        """One DuckDB connection running `COPY (sql) TO out`; `input_data=None` reads no input or sources."""
        wanted = self._instance_settings(threads, preserve_order)
        spare, self._spare = self._spare, None
        if spare is not None and spare.settings == wanted:
            con = spare.con  # started ahead, for this query alone
        else:
            if spare is not None:
                spare.con.close()
            con = connect(wanted, self.spill_dir)
        facts: dict[str, dict[str, Any]] = {}
        try:
            if self.limits.max_temp_directory_bytes:  # after temp_directory, which resets it
                con.execute(f"SET max_temp_directory_size = '{self.limits.max_temp_directory_bytes}B'")
            if not self.plan.in_input_order:  # the instance may be the spare, started preserving order
                con.execute("SET preserve_insertion_order = false")
            con.execute("SET enable_progress_bar = true")
            con.execute("SET enable_progress_bar_print = false")
            if input_data is not None:
                facts = self._attach(con, input_data)
            con.execute("SET enable_profiling = 'no_output'")
            with self._lock:
                if self._interrupted:
                    raise QueryInterrupted("query was interrupted before it started")
                self._con = con
            started = time.perf_counter()
            try:
                row = con.execute(f"COPY ({sql}) TO {literal(str(out))} (FORMAT parquet, COMPRESSION zstd)").fetchone()
            except duckdb.InterruptException as e:
                raise QueryInterrupted("query was interrupted") from e
            elapsed = time.perf_counter() - started
            profile = json.loads(con.get_profiling_information(format="json"))
        finally:
            with self._lock:
                self._con = None
            con.close()
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

    def _attach(self, con: duckdb.DuckDBPyConnection, input_data: pa.Table | str) -> dict[str, dict[str, Any]]:
        """Register the input and the sources, and check the sources against the registry."""
        if isinstance(input_data, str):
            con.execute(f"CREATE VIEW input AS SELECT * FROM read_parquet({literal(input_data)})")
        else:
            con.register("input", input_data)
        input_types = {r[0]: r[1] for r in con.execute("DESCRIBE SELECT * FROM input").fetchall()}
        facts = {}
        for join in self.plan.joins:
            source = self.sources[join.relation]
            facts[join.source.name], columns = attach_in_utc(con, source, join.relation, join.source.timestamp)
            check_source(columns, join, self.plan.registry_origin, input_types[join.namespace.key_feature])
        return facts


def is_memory_exhausted(error: duckdb.OutOfMemoryException) -> bool:
    """DuckDB's memory_limit was hit; not the spill volume's cap (`max_temp_directory_size`), which
    fewer threads would not help."""
    return "max_temp_directory_size" not in str(error)


def retry_threads(threads: int) -> int:
    """Threads for the out-of-memory retry: half, at least one (each thread holds its own buffers)."""
    return max(1, threads // 2)


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
