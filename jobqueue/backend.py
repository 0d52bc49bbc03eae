"""`JobQueueBackend`: what the SDK's public surface needs from a server, whichever way it is reached.

    client = JobQueueClient()              # picks the backend: `jobqueue.connect.resolve_target`
    client.backend                         # DirectBackend (Redis and storage: trusted) or HttpBackend (the API)

Two implementations: `jobqueue.direct_backend.DirectBackend` (today's code: Redis and storage, for code inside
the cluster and tests) and `jobqueue.http_backend.HttpBackend` (httpx against `jobqueue api`, with a token; needs
nothing else). The client (`jobqueue.client`) and the handles (`jobqueue.handles`) call only this, so they are
the same in both modes; both raise the same `jobqueue.errors` types with the same texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from jobqueue.errors import InvalidQueryError
from jobqueue.models import Priority
from jobqueue.sharding import check_num_shards

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow as pa
    import pyarrow.fs as pafs

    from jobqueue.api.wire import (
        CancelFilter,
        CancelManyResult,
        GroupStatus,
        RegistryApplied,
        RegistryHistory,
        RegistryVersionBody,
        ScheduleAction,
        ScheduleList,
        ScheduleRuns,
    )
    from jobqueue.job_filter import JobFilter
    from jobqueue.models import JobRecord
    from jobqueue.registry import Registry


@dataclass(frozen=True)
class QueryRequest:
    """An offline query as the client took it: options checked, the input not yet planned or staged."""

    input: Any  # dict of columns, pandas or polars DataFrame, Arrow table
    output: list[str]
    input_times: Any
    resource_group: str
    max_retries: int
    deadline: datetime | None
    include_input_time: bool
    submitted_at: datetime
    owner: str | None  # None: the default (direct: the OS user; HTTP: the token's)
    team: str | None
    tags: dict[str, str] = field(default_factory=dict)
    query_name: str | None = None
    correlation_id: str | None = None
    priority: Priority = Priority.NORMAL
    num_shards: int | str | None = None  # None: one job; N or "auto": a sharded query (`jobqueue.sharding`)
    num_workers: int | None = None  # a sharded query: at most this many shards run at once (None: no cap)


def query_request(input: Any, output: list[str], input_times: Any, group: str, max_retries: int,
                  completion_deadline: datetime | timedelta | None, include_input_time: bool, now: datetime,
                  owner: str | None, team: str | None, tags: dict[str, str] | None, query_name: str | None,
                  correlation_id: str | None, *, priority: Priority | str = Priority.NORMAL,
                  num_shards: int | str | None = None, num_workers: int | None = None) -> QueryRequest:
    """`offline_query`'s arguments checked (`InvalidQueryError` naming the field) as one `QueryRequest` (the API's
    submit builds its own with this too)."""
    deadline = _deadline(completion_deadline, now)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= 100:
        raise InvalidQueryError("max_retries", f"must be a whole number from 0 to 100, got {max_retries!r}")
    if not isinstance(include_input_time, bool):
        raise InvalidQueryError("include_input_time", f"must be True or False, got {include_input_time!r}")
    if isinstance(output, str) or not isinstance(output, (list, tuple)):
        raise InvalidQueryError("output", "must be a list of 'namespace.feature' names")
    check_num_shards(num_shards, num_workers)
    if not isinstance(priority, str) or priority not in Priority.__members__.values():
        raise InvalidQueryError("priority", f"must be one of {', '.join(Priority)}, got {priority!r}")
    return QueryRequest(input, list(output), input_times, group, max_retries, deadline, include_input_time, now,
                        owner, team, dict(tags or {}), query_name, correlation_id, Priority(priority), num_shards,
                        num_workers)


def _deadline(value: datetime | timedelta | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = now + value
    if not isinstance(value, datetime):
        raise InvalidQueryError("completion_deadline", "must be a datetime or a timedelta from now")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # naive times are UTC, as for input_times
    if value <= now:
        raise InvalidQueryError("completion_deadline", f"{value.isoformat()} is already past; give a future time")
    return value


class FinishWatcher(Protocol):
    """Blocks until one job is final, without polling: `subscribe()` before reading the record, then `wait(t)`
    (True: read the record again now). Direct: the job's finish channel (`jobqueue.finish_watch`); HTTP: a long
    poll of `GET /v1/jobs/{id}?wait=t`."""

    @property
    def subscribed(self) -> bool: ...

    async def subscribe(self) -> bool: ...

    async def wait(self, timeout: float) -> bool: ...

    async def close(self) -> None: ...


class JobQueueBackend(Protocol):
    @property
    def server(self) -> str:
        """Where it talks to, without credentials, for messages."""

    @property
    def on_embedded_server(self) -> bool:
        """Whether the server is the embedded one of a local `jobqueue up` (gone, it took its jobs with it)."""

    async def submit(self, query: QueryRequest) -> str:
        """Plan, stage and enqueue; the new job's id. `InvalidQueryError` before anything is staged."""

    async def resolve_job_id(self, job_id: str) -> str: ...

    async def get_job(self, job_id: str) -> JobRecord: ...

    def finish_watcher(self, job_id: str) -> FinishWatcher:
        """What `wait()` blocks on between two reads of the job's record."""

    async def cancel(self, job_id: str, wait: float | None) -> JobRecord: ...

    async def read_result(self, record: JobRecord) -> pa.Table: ...

    def result_location(self, record: JobRecord) -> str:
        """Where a succeeded job's result file is: direct, its URI in storage; over HTTP, the API's download."""

    async def result_files(self, records: Sequence[JobRecord]) -> tuple[pafs.FileSystem, list[str]]:
        """These succeeded jobs' result files as paths a `pyarrow.dataset` reads: direct, in storage; over HTTP,
        downloaded (streamed to disk) into a temporary folder of the client."""

    async def jobs(self, wanted: JobFilter, limit: int, submitted_after: datetime | None,
                   submitted_before: datetime | None) -> list[JobRecord]: ...

    async def cancel_many(self, wanted: CancelFilter) -> CancelManyResult: ...

    async def groups(self) -> list[GroupStatus]: ...

    async def schedules(self) -> ScheduleList: ...

    async def schedule_action(self, name: str, action: str) -> ScheduleAction: ...

    async def schedule_runs(self, name: str, limit: int) -> ScheduleRuns: ...

    async def registry_current(self) -> RegistryVersionBody: ...

    async def registry_history(self) -> RegistryHistory: ...

    async def registry_version(self, ref: str) -> RegistryVersionBody: ...

    async def apply_registry(self, registry: Registry, applied_by: str | None) -> RegistryApplied: ...

    async def aclose(self) -> None: ...
