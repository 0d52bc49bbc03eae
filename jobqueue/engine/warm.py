"""A DuckDB instance started ahead of the next query, so that a small query does not wait for DuckDB to start.

Starting an in-memory DuckDB instance costs tens of milliseconds (its catalog, its thread pool): more than a
100-row query runs. A consumer process (`enable()`) starts the next query's instance in the background once a
query is over, with the settings that query will give it. A query that finds a spare with its own settings
takes it; otherwise it connects as before. Nothing is shared: every query still gets a fresh instance, used by
no one before it and closed after it, and its own temp directory (the spare's, named as `spill_dir_name` names
them). At most one spare waits, and only in a process that enabled them (the SDK's in-process mode never does).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb

from jobqueue.engine.disk_space import spill_dir_name


@dataclass(frozen=True)
class InstanceSettings:
    """What a query's DuckDB instance is started with (`connect`)."""

    memory_limit_bytes: int
    threads: int
    spill_root: Path
    preserve_order: bool = True


@dataclass
class Instance:
    settings: InstanceSettings
    spill_dir: Path
    con: duckdb.DuckDBPyConnection


def connect(settings: InstanceSettings, spill_dir: Path) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory instance with the query's memory limit, threads and private temp directory, in UTC.

    Without Parquet prefetching: DuckDB reads only local files (object stores come through pyarrow and the
    scan cache), where reading a row group's column chunks ahead buys no time but holds them in memory, about
    200 MB at once for the 8-file, 20M-row source of bench/sharded.py. Measured there: a shard's peak RSS
    ~540 -> ~400 MiB, the unsharded query's peak unchanged, neither's CPU time higher."""
    con = duckdb.connect(":memory:", config={
        "memory_limit": f"{settings.memory_limit_bytes}B",
        "threads": settings.threads,
        "temp_directory": str(spill_dir),
        "preserve_insertion_order": settings.preserve_order,
    })
    try:
        con.execute("SET TimeZone = 'UTC'")  # loads the time zone data: milliseconds, also worth doing ahead
        con.execute("SET disable_parquet_prefetching = true")  # loads the parquet extension, which owns it
    except BaseException:
        con.close()
        raise
    return con


class _Spares:
    def __init__(self) -> None:
        self.enabled = False
        self._lock = threading.Lock()
        self._spare: Instance | None = None
        self._starting: threading.Thread | None = None

    def prepare(self, settings: InstanceSettings) -> None:
        """Start the next query's instance in a background thread (nothing when one waits or is starting)."""
        with self._lock:
            if not self.enabled or self._spare is not None or self._starting is not None:
                return
            self._starting = threading.Thread(target=self._start, args=(settings,), name="duckdb-spare", daemon=True)
            self._starting.start()

    def _start(self, settings: InstanceSettings) -> None:
        spill_dir = settings.spill_root / spill_dir_name()
        try:
            instance: Instance | None = Instance(settings, spill_dir, connect(settings, spill_dir))
        except duckdb.Error:
            instance = None  # the query will connect itself, and report what fails
        with self._lock:
            self._spare, self._starting = instance, None

    def take(self, settings: InstanceSettings) -> Instance | None:
        """The spare, when it was started with `settings`; else None, and a spare with other settings is closed.
        Blocks while one is starting (it is further along than a new instance would be): call it in the query's
        thread."""
        spare = self._take_spare()
        if spare is not None and spare.settings != settings:
            spare.con.close()
            return None
        return spare

    def discard(self) -> None:
        """Close the waiting spare, once one still starting has started (a consumer that stops)."""
        spare = self._take_spare()
        if spare is not None:
            spare.con.close()

    def _take_spare(self) -> Instance | None:
        """The spare, taken out, once one still starting has started."""
        with self._lock:
            starting = self._starting
        if starting is not None:
            starting.join()
        with self._lock:
            spare, self._spare = self._spare, None
        return spare


SPARES = _Spares()


def enable() -> None:
    """Keep a spare instance in this process (a consumer's)."""
    SPARES.enabled = True
