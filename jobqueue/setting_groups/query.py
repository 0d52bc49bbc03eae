"""How one query runs on DuckDB: memory, threads, and the spill space it may use (consumers and in-process runs)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobqueue.setting_groups import ByteSize


class QuerySettings(BaseSettings):
    model_config = SettingsConfigDict(populate_by_name=True)  # as `Settings`: its aliases are alternatives

    spill_directory: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("JOBQUEUE_SPILL_DIRECTORY", "CHALK_VELOX_SPILL_DIRECTORY"),
        description="Local (NVMe) directory where DuckDB spills; each query gets its own subdirectory, "
        "removed afterwards. Alias: CHALK_VELOX_SPILL_DIRECTORY. Default `<home>/spill`.",
    )
    query_memory_limit_percent: float = Field(
        default=50.0,
        gt=0,
        le=100,
        validation_alias=AliasChoices(
            "JOBQUEUE_QUERY_MEMORY_LIMIT_PERCENT", "CHALK_VELOX_QUERY_DEFAULT_MEMORY_LIMIT_PERCENT"
        ),
        description="DuckDB `memory_limit` per query, as a percent of the container memory limit "
        "(cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`, else physical RAM). The rest of the process "
        "(Python, Arrow, DuckDB's allocations outside its buffer pool) takes ~250 MB, so a 500 MB container "
        "stays under its limit at 50% and not at 60%. Alias: CHALK_VELOX_QUERY_DEFAULT_MEMORY_LIMIT_PERCENT.",
    )
    container_memory_bytes: ByteSize | None = Field(
        default=None,
        gt=0,
        description="Override the detected container memory (e.g. `2GiB`). The local backend sets it "
        "to each consumer's memory limit (the group's `memory`, or its share of RAM).",
    )
    local_memory_share_percent: float = Field(
        default=80.0, gt=0, le=100,
        description="Local backend: a consumer of a group without `memory` gets this percent of physical RAM "
        "divided by the group's `max_instances`, so the group's consumers fit the machine together.",
    )
    local_cgroup_parent: Path | None = Field(
        default=None,
        description="Local backend: the cgroup directory under which each consumer gets its memory cgroup "
        "(v2: memory must be delegable there). Default: the manager's own memory cgroup.",
    )
    query_threads: int | None = Field(
        default=None, gt=0,
        description="DuckDB `threads` per query. Default: the cgroup CPU quota (v2 `cpu.max`, v1 "
        "`cpu.cfs_quota_us`/`cpu.cfs_period_us`) in whole CPUs, else the CPUs available.",
    )
    spill_reserve_bytes: ByteSize = Field(
        default=1 << 30, ge=0,
        description="Free space kept on the spill volume (e.g. `10GiB`): the spill caps (DuckDB "
        "`max_temp_directory_size`) of all queries and the scan caches on the volume never add up to more than "
        "its free space minus this.",
    )
    spill_min_bytes: ByteSize = Field(
        default=64 << 20, ge=0,
        description="Spill space a query needs to start. Each query reserves its spill space in the volume's "
        "ledger (shared by all queries and scan caches on that volume); it gets what is not promised to others, "
        "minus this much for every other idle query slot on the volume, and at least this. A query that cannot "
        "get it waits for other queries to finish (up to JOBQUEUE_SPILL_WAIT_SECONDS).",
    )
    spill_wait_seconds: float = Field(
        default=300.0, ge=0,
        description="How long a query waits for JOBQUEUE_SPILL_MIN_BYTES of spill space held by other queries "
        "before it fails (retryably) with a message naming the volume and the numbers.",
    )
    spill_ledger_directory: Path | None = Field(
        default=None,
        description="Where the per-volume space ledgers live (one small JSON file per volume, guarded by `flock`). "
        "Every process sharing a volume must use the same directory. Default `<home>/ledger`.",
    )
