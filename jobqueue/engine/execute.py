"""One offline query from payload to result file and performance summary.

Shared by the arq consumer and the SDK's in-process mode (`run_asynchronously=False`):
load the staged input, plan (pure), run on DuckDB under the configured limits, place the result.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from jobqueue.engine.disk_space import spill_reservation
from jobqueue.engine.duckdb_run import EngineLimits, QueryInterrupted, QueryRun
from jobqueue.engine.resources import container_cpus, container_memory_bytes, memory_limit_bytes, threads_for
from jobqueue.engine.scan_cache import BlockCache, ScanStats
from jobqueue.engine.sources import TableSource, TimeBounds, make_source
from jobqueue.models import PerformanceSummary, QueryJob
from jobqueue.plan import QueryPlan, plan_query
from jobqueue.registry import Registry
from jobqueue.settings import Settings
from jobqueue.sizes import format_bytes
from jobqueue.storage import Storage, is_local, job_uri, local_path

if TYPE_CHECKING:  # pyarrow is loaded only for what needs it (object stores, an input that is not local)
    import pyarrow as pa
    import pyarrow.fs as pafs


def engine_limits(settings: Settings) -> EngineLimits:
    """Memory from the container limit, threads from the CPU quota. The temp space cap is reserved when the
    query runs (`PreparedQuery.spill_space`)."""
    if settings.container_memory_bytes is not None:
        container, where = settings.container_memory_bytes, "JOBQUEUE_CONTAINER_MEMORY_BYTES"
    else:
        container, where = container_memory_bytes()
    settings.spill_root.mkdir(parents=True, exist_ok=True)
    percent = settings.query_memory_limit_percent
    return EngineLimits(
        memory_limit_bytes=memory_limit_bytes(container, percent),
        memory_hint=(
            f"raise JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT (now {percent:g}% of {format_bytes(container)} from {where}; "
            "a resource group's `memory_limit_percent`) or the container's memory (a resource group's `memory`)"
        ),
        threads=settings.query_threads or threads_for(container_cpus()[0]),
        spill_root=settings.spill_root,
    )


def table_sources(plan: QueryPlan, job: QueryJob, storage: Storage) -> dict[str, TableSource]:
    """A table source per relation, told the input's time range so it can prune what it reads."""
    sources: dict[str, TableSource] = {}
    for join in plan.joins:
        bounds = None
        if job.input_time_min is not None and job.input_time_max is not None:
            lookback = None if join.features else max(
                join.source.aggregations[f].window_seconds for f in join.aggregations
            )
            bounds = TimeBounds(job.input_time_min, job.input_time_max, lookback)
        # a shard's keys are those of its first output namespace: a source of it can read only their buckets
        shard = job.shard_of if job.shard_of and job.shard_of.namespace == join.namespace.name else None
        sources[join.relation] = make_source(join.source, storage, bounds, shard)
    return sources


def _cached_filesystem(fs: pafs.FileSystem, cache: BlockCache | None, stats: ScanStats) -> pafs.FileSystem:
    from jobqueue.engine.cached_fs import cached_filesystem

    return cached_filesystem(fs, cache, stats)


@dataclass(frozen=True)
class QueryOutcome:
    result_uri: str
    summary: PerformanceSummary


class PreparedQuery:
    """A validated job bound to its plan and limits; `execute()` blocks (run it in a thread)."""

    def __init__(self, job: QueryJob, registry: Registry, settings: Settings, consumer_id: str,
                 scan_cache: BlockCache | None = None) -> None:
        t0 = time.perf_counter()
        self.job = job
        self.settings = settings
        self.consumer_id = consumer_id
        self.storage = Storage(settings)
        self.scan_cache = scan_cache
        self.scan_stats = ScanStats()
        # object-store sources are read through the scan cache when there is one, and always counted
        sources = self.storage.reading_through(lambda fs: _cached_filesystem(fs, scan_cache, self.scan_stats))
        self.plan: QueryPlan = plan_query(job.input_columns, job.output, registry,
                                          include_input_time=job.include_input_time,
                                          keep_row=job.parent_id is not None)
        self.limits = engine_limits(settings)
        self.query_run = QueryRun(self.plan, self.limits, table_sources(self.plan, job, sources))
        self.plan_seconds = time.perf_counter() - t0

    @contextlib.contextmanager
    def spill_space(self) -> Iterator[None]:
        """Hold this query's spill reservation on the volume's ledger (`jobqueue.engine.disk_space`) while it runs:
        DuckDB's `max_temp_directory_size` is the reserved cap."""
        try:
            with spill_reservation(self.settings, self.query_run.spill_dir, self.query_run.interrupted) as cap:
                self.limits = self.query_run.limits = replace(self.limits, max_temp_directory_bytes=cap)
                yield
        except InterruptedError as e:
            raise QueryInterrupted(str(e)) from e

    def interrupt(self) -> None:
        """Stop the running query soon (from any thread); `execute` then raises `QueryInterrupted`."""
        self.query_run.interrupt()

    def progress(self) -> float:
        return self.query_run.progress()

    def execute(self, started_at: datetime | None = None) -> QueryOutcome:
        try:
            self.query_run.take_spare()  # before the spill reservation, which names the temp directory
            with self.spill_space():
                return self._execute(started_at)
        finally:
            self.query_run.discard_spare()  # when it never ran

    def _execute(self, started_at: datetime | None = None) -> QueryOutcome:
        t0 = time.perf_counter()
        started_at = started_at or datetime.now(UTC)
        result_uri = job_uri(self.settings.results, self.job.environment, self.job.job_id, "result.parquet")
        if is_local(self.job.input_uri):
            staged = local_path(self.job.input_uri)
            if not staged.is_file():  # deterministic: retrying cannot bring it back
                raise FileNotFoundError(f"the staged input {self.job.input_uri} is missing (removed, or the SDK and "
                                        "the consumer use different JOBQUEUE_STAGING_URI)")
            input_data: pa.Table | str = str(staged)
        else:
            input_data = self.storage.read_table(self.job.input_uri)
        t_input = time.perf_counter()
        if is_local(result_uri):
            result = self.query_run.run(input_data, local_path(result_uri))
            t_exec = time.perf_counter()
        else:
            staged = self.limits.spill_root / f"result-{self.job.job_id.replace(':', '_')}-{uuid.uuid4().hex}.parquet"
            result = self.query_run.run(input_data, staged)
            t_exec = time.perf_counter()
            self.storage.upload_file(staged, result_uri)
        t_done = time.perf_counter()
        summary = PerformanceSummary(
            consumer_id=self.consumer_id,
            spill_enabled=True,
            spilled_bytes=result.spilled_bytes,
            bytes_written=result.bytes_written,
            bytes_read=result.bytes_read + self.scan_stats.bytes_read,
            memory_limit_bytes=self.limits.memory_limit_bytes,
            max_temp_directory_bytes=self.limits.max_temp_directory_bytes,
            peak_memory_bytes=result.peak_memory_bytes,
            threads=self.limits.threads,
            rows_in=self.job.input_rows,
            rows_out=result.rows_out,
            rows_scanned=result.rows_scanned,
            sources=result.sources,
            scan_cache_enabled=self.scan_cache is not None,
            scan_cache_hits=self.scan_stats.hits,
            scan_cache_misses=self.scan_stats.misses,
            bytes_from_cache=self.scan_stats.bytes_from_cache,
            bytes_from_remote=self.scan_stats.bytes_from_remote,
            scan_cache_evictions=self.scan_stats.evictions,
            queue_wait_seconds=max(0.0, (started_at - self.job.submitted_at).total_seconds()),
            execution_seconds=result.execution_seconds,
            total_seconds=t_done - t0 + self.plan_seconds,
            oom_retries=result.oom_retries,
            stage_seconds={
                "stage_input": round(t_input - t0, 6),
                "plan": round(self.plan_seconds, 6),
                "execute": round(t_exec - t_input, 6),
                "write_result": round(t_done - t_exec, 6),
                **({"oom_reorder": round(result.reorder_seconds, 6)} if result.oom_retries else {}),
            },
            owner=self.job.owner, team=self.job.team, tags=self.job.tags, query_name=self.job.query_name,
            correlation_id=self.job.correlation_id,
        )
        return QueryOutcome(result_uri=result_uri, summary=summary)
