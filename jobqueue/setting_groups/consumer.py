"""A consumer process: its scan cache, identity, ops port, polling, heartbeats and draining; and the lifetimes of a
job it runs (heartbeat, retries, timeout, how long records and results are kept)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobqueue.setting_groups import ByteSize


class ConsumerSettings(BaseSettings):
    model_config = SettingsConfigDict(populate_by_name=True)  # as `Settings`: its aliases are alternatives

    table_scan_cache_bytes: ByteSize = Field(
        default=0, ge=0,
        validation_alias=AliasChoices("JOBQUEUE_TABLE_SCAN_CACHE_BYTES", "LIBCHALK_VELOX_TABLE_SCAN_SSD_CACHE_BYTES"),
        description="Table-scan SSD cache size per consumer (e.g. `200GiB`): object-store bytes of Parquet and "
        "Iceberg sources kept on local disk in 4 MiB blocks, scan-resistant eviction. 0: off. "
        "Alias: LIBCHALK_VELOX_TABLE_SCAN_SSD_CACHE_BYTES.",
    )
    table_scan_cache_directory: Path | None = Field(
        default=None, description="Scan cache directory. Default `<spill directory>/table_scan_cache`. Each consumer "
        "holds an exclusive lock on it.",
    )
    table_scan_cache_on_locked: Literal["fail", "uncached"] = Field(
        default="fail", description="When another process holds the cache directory: `fail` (the consumer exits "
        "with a message) or `uncached` (it runs without a cache).",
    )
    consumer_id: str | None = Field(
        default=None, description="Consumer identity. Default `<hostname>-<pid>` (the pod name on Kubernetes)."
    )
    consumer_slot: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Set by the local backend per consumer slot (`<group>-<n>`, stable across restarts): the "
        "scan cache directory becomes `<scan cache directory>/slot-<slot>`, so consumers on one machine never "
        "share a cache and a restarted one finds its warm cache.",
    )
    consumer_http_port: int = Field(
        default=0, ge=-1, le=65535,
        description="Consumer port for /metrics (`jobqueue_consumer_*` and process metrics), /healthz, /readyz. "
        "0: any free port, logged at start as `ops server listening` with its `url` (the local backend always "
        "gives its consumers free ports: several run on one machine); -1: off. The Kubernetes backend sets 8080.",
    )
    consumer_poll_seconds: float = Field(
        default=0.2, gt=0, description="How often an idle consumer looks at its queue when nothing wakes it (a "
        "submission to its group wakes it at once; this catches deferred retries and missed wake-ups).",
    )
    consumer_heartbeat_seconds: float = Field(
        default=2.0, gt=0, description="How often a consumer publishes its presence and busy jobs."
    )
    consumer_drain_seconds: int = Field(
        default=3600,
        ge=0,
        description="On SIGTERM a consumer stops taking jobs and lets running ones finish for this long.",
    )
    consumer_exit_with_parent: bool = Field(
        default=False,
        description="Drain and exit when the parent process dies (set by the local backend).",
    )
    consumer_restart_backoff_max_seconds: float = Field(
        default=60.0, gt=0,
        description="Local backend: a consumer that exits unexpectedly within 30 s of its start is restarted "
        "after 2 s, doubling per such exit in a row up to this; `jobqueue status` shows its last error.",
    )
    job_heartbeat_ttl_seconds: float = Field(
        default=15.0, gt=0,
        description="A running job's heartbeat key lives this long unless renewed (every 0.5 s). When it "
        "expires, the manager's reaper re-queues the job (or fails it when its retries are used up).",
    )
    retry_backoff_seconds: float = Field(
        default=5.0, ge=0, description="Delay before a failed attempt is retried; doubles per attempt (cap 300 s)."
    )
    job_timeout_seconds: int = Field(default=6 * 3600, gt=0, description="Hard cap on one query's run time.")
    job_ttl_seconds: int = Field(
        default=7 * 24 * 3600, gt=0, description="How long job records stay in Redis after submission."
    )
    result_ttl_seconds: int | None = Field(
        default=None, gt=0,
        description="How long a query's result is kept after its job finished; the manager's garbage collector "
        "removes it then. Default: JOBQUEUE_JOB_TTL_SECONDS.",
    )
