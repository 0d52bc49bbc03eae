"""Pydantic models shared by SDK, manager and consumers: the data half of the wire contract.

Pure data, no I/O. Everything that travels through Redis is one of these models as JSON.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from jobqueue.attribution import CorrelationId, OwnerName, QueryName, Tags, TeamName

JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9:_.-]{0,199}$"
REGISTRY_VERSION_PATTERN = r"^[1-9][0-9]{0,17}-[0-9a-f]{12}$"  # `<number>-<hash>`: jobqueue.registry_versions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourceRequests(_Strict):
    """Where and how a query runs. `resource_group` picks the queue and consumer pool."""

    resource_group: str = "default"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # not done by its completion_deadline

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED)


class Priority(enum.StrEnum):
    """A job's priority: it weights its owner's share of its group (`jobqueue.fair_share`); it never jumps the
    whole queue."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class ShardOf(_Strict):
    """Which rows of its query's input a shard holds (`jobqueue.sharding`): those whose key, the primary key of the
    `namespace` (the first output namespace), hashes to `index` mod `count`; `key_kind` says which of the two
    hashes that key took (an integer key's or a text key's). A consumer reads only the matching buckets of a
    source laid out in key buckets (`jobqueue.engine.buckets`)."""

    index: int = Field(ge=0)
    count: int = Field(ge=1)
    namespace: str
    key_kind: Literal["integer", "text"]

    @model_validator(mode="after")
    def _index_within_count(self) -> ShardOf:
        if self.index >= self.count:
            raise ValueError(f"shard index {self.index} is not below the shard count {self.count}")
        return self


class QueryJob(_Strict):
    """The payload of one queued offline query: validated on enqueue and again on dequeue.

    `input_uri` points at the staged Parquet input (columns: the input features, `__ts__` and
    `__row__`); the input itself never travels through Redis.
    """

    job_id: str = Field(pattern=JOB_ID_PATTERN)
    environment: str
    resource_group: str
    output: list[str] = Field(min_length=1, max_length=10_000)
    input_uri: str = Field(min_length=1, max_length=4096)
    input_columns: list[str] = Field(min_length=1, max_length=10_000)
    input_rows: int = Field(ge=1)
    # times carry their offset: a naive one is refused here (the SDK takes naive input as UTC before this)
    submitted_at: AwareDatetime
    max_retries: int = Field(default=2, ge=0, le=100)
    completion_deadline: AwareDatetime | None = None
    input_time_min: AwareDatetime | None = None  # the input's as-of range: lets sources prune files
    input_time_max: AwareDatetime | None = None
    include_input_time: bool = False  # the result gets `input_time`, each row's as-of time (jobqueue.plan)
    # attribution (`jobqueue.attribution`): who the job is for and what it is
    owner: OwnerName | None = None
    team: TeamName | None = None
    tags: Tags = Field(default_factory=dict)
    query_name: QueryName | None = None
    correlation_id: CorrelationId | None = None
    priority: Priority = Priority.NORMAL
    # the registry version (`<number>-<hash>`) the job was planned against; None: queued by an SDK that planned
    # against its local file (no version in Redis, or an older SDK), and consumers plan with theirs
    registry_version: str | None = Field(default=None, pattern=REGISTRY_VERSION_PATTERN)
    # a shard of a sharded query (`jobqueue.sharding`): its parent's job id; its result keeps `__row__`
    parent_id: str | None = Field(default=None, pattern=JOB_ID_PATTERN)
    shard_of: ShardOf | None = None  # a shard: which of its query's input rows it holds


class PerformanceSummary(_Strict):
    """What a consumer measured while running one query."""

    consumer_id: str
    spill_enabled: bool
    spilled_bytes: int = Field(description="DuckDB's peak temp-directory size for the query, in bytes.")
    bytes_written: int = Field(
        default=0, description="Total bytes DuckDB wrote for the query: spill files plus the result file."
    )
    memory_limit_bytes: int
    max_temp_directory_bytes: int | None = Field(
        default=None, description="DuckDB max_temp_directory_size: spill space reserved for the query on its volume."
    )
    peak_memory_bytes: int = Field(description="DuckDB's peak buffer-manager memory for the query.")
    threads: int
    oom_retries: int = Field(
        default=0, description="1 when DuckDB ran out of memory and the query succeeded on its one retry with fewer "
        "threads and preserve_insertion_order=false (then stage_seconds has `oom_reorder`, the pass that restores "
        "input order; `threads` stays the first run's)."
    )
    rows_in: int
    rows_out: int
    rows_scanned: int = 0
    bytes_read: int = Field(default=0, description="Bytes read: local files (the input, local sources and spill, "
                            "per DuckDB's profiler) plus the object-store source bytes the query read, whether the "
                            "scan cache or the store served them (Iceberg data files included).")
    queue_wait_seconds: float
    execution_seconds: float
    total_seconds: float
    sources: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per source: kind, rows_read, bytes_scanned (the decoded bytes DuckDB's scans of it produced), "
        "and for Iceberg the snapshot id read and data files scanned.",
    )
    scan_cache_enabled: bool = Field(default=False, description="The consumer read object stores through its "
                                     "table-scan SSD cache (JOBQUEUE_TABLE_SCAN_CACHE_BYTES > 0).")
    scan_cache_hits: int = Field(default=0, description="Cache block reads served from local disk. A cold cache "
                                 "shows hits too: a query reads some blocks more than once (a Parquet footer when the "
                                 "scan is planned and again when it runs), and the second read is a hit.")
    scan_cache_misses: int = Field(default=0, description="Cache blocks fetched from the object store.")
    bytes_from_cache: int = Field(default=0, description="Source bytes read from the scan cache.")
    bytes_from_remote: int = Field(default=0, description="Source bytes fetched from the object store "
                                   "through the scan cache.")
    scan_cache_evictions: int = Field(default=0, description="Blocks this query's reads evicted.")
    stage_seconds: dict[str, float] = Field(
        default_factory=dict, description="stage_input, plan, execute (DuckDB, incl. the local result file), "
        "write_result (upload or rename); oom_reorder after an out-of-memory retry."
    )
    # the job's attribution, so that a summary read on its own says whose query it measured
    owner: str | None = None
    team: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    query_name: str | None = None
    correlation_id: str | None = None


class WaitCode(enum.StrEnum):
    """Why a queued job is not running yet (`WaitReason.code`): stable names for programs and the HTTP API."""

    NO_MANAGER = "no_manager"  # no manager has ever ticked in the environment
    MANAGER_STALE = "manager_stale"  # the last tick is too old: no manager runs now
    UNKNOWN_GROUP = "unknown_group"  # the running manager does not serve the job's group
    GROUP_ERROR = "group_error"  # the manager cannot scale the group (a config or backend error)
    MAX_INSTANCES_ZERO = "max_instances_zero"
    DEFERRED = "deferred"  # a retry waits for its due time
    SHARD_HELD = "shard_held"  # a shard past its query's num_workers, released when a sibling ends
    TEAM_LIMIT = "team_limit"  # the job's team runs its most jobs in the group (JOBQUEUE_QUOTA_MAX_RUNNING_PER_TEAM)
    CONSUMER_START_FAILING = "consumer_start_failing"
    CONSUMER_STARTING = "consumer_starting"
    AT_MAX_INSTANCES = "at_max_instances"
    SCALE_UP_PENDING = "scale_up_pending"  # the manager has not asked for a consumer yet (its next tick will)
    NEXT_IN_LINE = "next_in_line"  # a consumer has room: it takes the job at its next poll


class WaitReason(_Strict):
    """Why a queued job waits, as observed when its record was read."""

    code: WaitCode
    message: str = Field(description="For people: what holds the job and, where there is one, the fix.")


class JobRecord(_Strict):
    """A job as the SDK and CLI see it: stored as the hash `<prefix>job:<id>`, but for `wait_reason`, which the
    SDK works out when it reads a queued job (`jobqueue.waiting`)."""

    job_id: str
    status: JobStatus
    resource_group: str
    output: list[str]
    input_rows: int
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    consumer_id: str | None = None
    progress: float = 0.0
    attempts: int = 0
    max_retries: int = 2
    completion_deadline: datetime | None = None
    cancel_requested: bool = False
    errors: list[str] = Field(default_factory=list, description="One entry per failed attempt, oldest first.")
    error: str | None = None
    result_uri: str | None = None
    summary: PerformanceSummary | None = None
    # attribution (`jobqueue.attribution`): who the job is for and what it is
    owner: OwnerName | None = None
    team: TeamName | None = None
    tags: Tags = Field(default_factory=dict)
    query_name: QueryName | None = None
    correlation_id: CorrelationId | None = None
    priority: Priority = Field(default=Priority.NORMAL, description="Weights the owner's share of the group: "
                               "high 4, normal 2, low 1 (`jobqueue.fair_share`).")
    wait_reason: WaitReason | None = Field(default=None, description="Why a queued job is not running yet; "
                                           "None once it runs (never stored: read with the record).")
    registry_version: str | None = Field(default=None, description="The registry version the job was planned "
                                         "against (`jobqueue registry show <version>`); None: the local file.")
    attempt_starts: list[datetime] = Field(default_factory=list, description="When each attempt started (claimed "
                                           "by a consumer), oldest first.")
    attempt_ends: list[datetime] = Field(default_factory=list, description="When each attempt ended (finished, "
                                         "failed, was cancelled or given back to the queue), oldest first.")
    shard_ids: list[str] = Field(default_factory=list, description="A sharded query's parent: its shards' job "
                                 "ids in shard order (each a job of its own); empty for any other job.")
    parent_id: str | None = Field(default=None, description="A shard: the job id of its sharded query's parent.")
    num_workers: int | None = Field(default=None, description="A parent: at most this many of its shards run at "
                                    "once, across consumers (None: no cap).")
    shards_done: int | None = Field(default=None, description="A parent: how many shards have succeeded (derived "
                                    "from them when read, never stored).")
    rows_done: int | None = Field(default=None, description="A parent: input rows of the shards that have "
                                  "succeeded (derived when read, never stored).")


class ConsumerInfo(_Strict):
    """A consumer's heartbeat: who it is, where it runs and which jobs it is executing."""

    consumer_id: str
    resource_group: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    running: list[str] = Field(default_factory=list)
    draining: bool = False
