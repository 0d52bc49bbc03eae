"""The SDK: `AsyncJobQueueClient` does the I/O; `JobQueueClient` is its thin synchronous twin.

    client = JobQueueClient()
    job = client.offline_query(
        input={"user.id": [1, 2, 3]},
        output=["user.age", "user.score"],
        run_asynchronously=True,
        resources=ResourceRequests(resource_group="default"),
    )
    job.wait(show_progress=True)
    df = job.to_pandas()

Submitting validates everything first (group, features, input shape) and raises
`InvalidQueryError` before anything is staged or enqueued. The input is staged as Parquet; only
a small JSON payload goes through Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import weakref
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
from arq.connections import ArqRedis
from arq.jobs import serialize_job
from pydantic import SecretStr, ValidationError

from jobqueue import serializer
from jobqueue.api.wire import (
    CancelFilter,
    CancelManyResult,
    GroupStatus,
    RegistryApplied,
    RegistryHistory,
    RegistryVersionBody,
    ScheduleAction,
    ScheduleList,
)
from jobqueue.attribution import Attribution, check_attribution, default_owner, new_correlation_id
from jobqueue.backend import JobQueueBackend, QueryRequest
from jobqueue.connect import HttpTarget, resolve_target
from jobqueue.direct_backend import DirectBackend
from jobqueue.errors import (
    ConfigError,
    InvalidQueryError,
    QuotaExceededError,
    RedisUnavailableError,
    RegistryMismatchError,
)
from jobqueue.groups import ResourceGroup, load_groups_cached
from jobqueue.handles import AsyncJobHandle, AsyncLocalResult, JobHandle, LocalResult
from jobqueue.http_backend import HttpBackend
from jobqueue.inputs import time_range, to_arrow, with_times
from jobqueue.job_filter import JobFilter
from jobqueue.jobstore import JobStore
from jobqueue.keys import ARQ_FUNCTION, Keys, submitted_event
from jobqueue.lookup_cache import LookupCache
from jobqueue.models import JobRecord, JobStatus, QueryJob, ResourceRequests
from jobqueue.outage import REDIS_UNREACHABLE, redacted
from jobqueue.plan import plan_query
from jobqueue.quotas import Quota, check_input_rows, queued_quotas, quotas_for
from jobqueue.redis import connect_redis
from jobqueue.registry import Registry, load_registry
from jobqueue.registry_store import RegistryStore
from jobqueue.registry_versions import content_hash, document_of, parse_version_ref
from jobqueue.settings import Settings, load_settings
from jobqueue.storage import Storage, is_local, job_uri
from jobqueue.sync import LoopThread

STAGE_INLINE_BYTES = 256 << 10  # a local input up to this size is staged on the event loop, not in a thread



def query_request(input: Any, output: list[str], input_times: Any, group: str, max_retries: int,
                  completion_deadline: datetime | timedelta | None, include_input_time: bool, now: datetime,
                  owner: str | None, team: str | None, tags: dict[str, str] | None, query_name: str | None,
                  correlation_id: str | None) -> QueryRequest:
    """`offline_query`'s arguments checked (`InvalidQueryError` naming the field) as one `QueryRequest`."""
    deadline = _deadline(completion_deadline, now)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or not 0 <= max_retries <= 100:
        raise InvalidQueryError("max_retries", f"must be a whole number from 0 to 100, got {max_retries!r}")
    if not isinstance(include_input_time, bool):
        raise InvalidQueryError("include_input_time", f"must be True or False, got {include_input_time!r}")
    if isinstance(output, str) or not isinstance(output, (list, tuple)):
        raise InvalidQueryError("output", "must be a list of 'namespace.feature' names")
    return QueryRequest(input, list(output), input_times, group, max_retries, deadline, include_input_time, now,
                        owner, team, dict(tags or {}), query_name, correlation_id)

class AsyncJobQueueClient:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: Registry | None = None,
        groups: dict[str, ResourceGroup] | None = None,
        redis: ArqRedis | None = None,
        api_url: str | None = None,
        token: str | SecretStr | None = None,
        direct: bool = False,
    ) -> None:
        """`api_url` and `token` (or JOBQUEUE_API_URL and JOBQUEUE_API_TOKEN): talk to the HTTP API, needing
        nothing else. Else direct ("trusted"): Redis (JOBQUEUE_REDIS_URL, or `redis`) and storage. With neither,
        a running `jobqueue up` on this machine: `jobqueue.connect` says which, in which order. `direct=True`:
        the direct mode whatever is set (the service's own processes: the API, the manager)."""
        self.settings = settings or load_settings()
        self.keys = Keys.for_environment(self.settings.environment)
        target = resolve_target(self.settings, api_url, token, redis_given=direct or redis is not None)
        self.backend: JobQueueBackend
        if isinstance(target, HttpTarget):
            if registry is not None or groups is not None:
                raise ConfigError("registry= and groups= are for the direct mode: over HTTP the service plans "
                                  "against its own registry and groups")
            self.backend = HttpBackend(target.url, target.token, local=target.local,
                                       upload_threshold=self.settings.upload_threshold_bytes)
            self.registry = Registry()
        else:
            self.backend = DirectBackend(self)
            self.registry = registry if registry is not None else load_registry(self.settings.registry_path)
        # a registry of its own (given, or JOBQUEUE_REGISTRY_PATH) must be the served one: see `planning_registry`
        self._local_hash = (content_hash(document_of(self.registry))
                            if registry is not None or (self.settings.registry_path is not None and self.direct)
                            else None)
        self._registries: RegistryStore | None = None
        self._local_groups = groups
        # what each submission reads from Redis (current registry version, served groups): the API reuses it for
        # JOBQUEUE_API_CACHE_SECONDS; any other client reads it every time (seconds 0)
        self.lookups = LookupCache()
        self._redis = redis
        self._owns_redis = redis is None
        self._url: str | None = None  # the URL connected to (the embedded server's record may go away)
        self._embedded = False
        self._store: JobStore | None = None
        self.storage = Storage(self.settings)

    @property
    def direct(self) -> bool:
        """Whether this client reaches Redis and storage itself ("trusted"), rather than the HTTP API."""
        return isinstance(self.backend, DirectBackend)

    def _direct_only(self, what: str) -> None:
        if not self.direct:
            raise ConfigError(f"{what} is for the direct mode (JOBQUEUE_REDIS_URL); this client talks to "
                              f"{self.backend.server}")

    @property
    def redis(self) -> ArqRedis:
        if self._redis is None:
            self._direct_only("Redis")
            self._url = self.settings.resolved_redis_url()
            self._embedded = self.settings.redis_url is None or self.settings.redis_url == self.settings.embedded_url()
            self._redis = connect_redis(self.settings)
        return self._redis

    @property
    def server(self) -> str:
        """The Redis (or API) this client talks to, without credentials, for messages."""
        if not self.direct:
            return self.backend.server
        return redacted(self._url or self.settings.redis_url or "the configured Redis")

    @property
    def on_embedded_server(self) -> bool:
        """Whether this client talks to the embedded server of a local `jobqueue up`, which keeps nothing once
        it stops: its `<home>/redis.url` gave the URL, or the URL set is the one recorded there."""
        return self._embedded

    @property
    def store(self) -> JobStore:
        if self._store is None:
            self._store = JobStore(self.redis, self.keys, self.settings.job_ttl_seconds)
        return self._store

    @property
    def registries(self) -> RegistryStore:
        """The registry versions served in Redis (`jobqueue registry`)."""
        if self._registries is None:
            self._registries = RegistryStore(self.redis, self.keys, self.lookups)
        return self._registries

    async def planning_registry(self) -> tuple[Registry, str | None]:
        """The registry a new job is planned against, and the version it pins: the current version in Redis when
        there is one, else this client's own (JOBQUEUE_REGISTRY_PATH, or the one given), pinning none (consumers
        then plan with their own file, as before versions existed). A client with a registry of its own that
        differs from the current version raises `RegistryMismatchError`: its file would say one thing and the
        job do another."""
        current = await self.registries.current_id()
        if current is None:
            return self.registry, None
        if self._local_hash is not None and not current.endswith(self._local_hash):
            served = await self.registries.version(current)
            raise RegistryMismatchError(
                f"{self.registry.origin} (JOBQUEUE_REGISTRY_PATH) is not the registry the service plans against: "
                f"the current version is {current}, applied {served.applied_at:%Y-%m-%d %H:%M:%S %Z}"
                + (f" by {served.applied_by}" if served.applied_by else "") + f" from {served.origin}. Apply "
                f"yours (`jobqueue registry apply {self.registry.origin}`), or unset JOBQUEUE_REGISTRY_PATH to "
                "plan against the current version; nothing was submitted")
        return await self.registries.registry(current), current

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def close_connections(self) -> None:
        """Close the direct mode's Redis connection (if this client opened it)."""
        if self._redis is not None and self._owns_redis:
            await self._redis.aclose()
            self._redis = None
            self._store = None
            self._registries = None

    async def __aenter__(self) -> AsyncJobQueueClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @contextlib.contextmanager
    def reaching_redis(self, consequence: str) -> Iterator[None]:
        """A lost or refused Redis connection becomes `RedisUnavailableError` naming the server and the fix."""
        try:
            yield
        except REDIS_UNREACHABLE as e:
            raise RedisUnavailableError(
                f"cannot reach Redis at {self.server} ({e}); {consequence}. "
                "Check that Redis is up (`jobqueue up` on one machine) and JOBQUEUE_REDIS_URL"
            ) from e

    async def known_groups(self) -> list[str]:
        """Groups the running manager serves (published in Redis), else the local config's."""
        published = await self.lookups.get("groups", self._published_groups)
        if published:
            return published
        groups = self._local_groups or load_groups_cached(self.settings.resource_groups_path)
        return sorted(groups)

    async def _published_groups(self) -> list[str]:
        published = await cast(Awaitable[list[bytes]], self.redis.hkeys(self.keys.groups))
        return sorted(g.decode() for g in published)

    async def offline_query(
        self,
        input: Any,
        output: list[str],
        input_times: Any = None,
        *,
        run_asynchronously: bool = True,
        resources: ResourceRequests | None = None,
        max_retries: int = 2,
        completion_deadline: datetime | timedelta | None = None,
        include_input_time: bool = False,
        owner: str | None = None,
        team: str | None = None,
        tags: dict[str, str] | None = None,
        query_name: str | None = None,
        correlation_id: str | None = None,
    ) -> AsyncJobHandle | AsyncLocalResult:
        """Validate, stage and enqueue one offline query; or run it here when not asynchronous.

        `input`: a dict of columns, a pandas or polars DataFrame, or an Arrow table, with the primary key of
        every output namespace (columns named `namespace.feature`). `input_times`: one time per row, the time
        each row is answered as of (default: now; naive times are UTC). `max_retries`: failed attempts retried
        (default 2, so 3 attempts). `completion_deadline`: a time (or a delay from now) after which the job is
        `expired` if not done. `include_input_time`: the result gets an `input_time` column, the UTC time each
        row was answered as of, after the input columns (to audit point-in-time answers).

        Attribution (`jobqueue.attribution`), stored with the job and shown by `jobqueue jobs`: `owner` (default:
        the OS user), `team` (default: JOBQUEUE_TEAM), `tags` (a small mapping of text), `query_name`, and
        `correlation_id` (default: a new one) to find the job from the caller's own logs.
        """
        resources = resources or ResourceRequests()
        now = datetime.now(UTC)
        query = query_request(input, output, input_times, resources.resource_group, max_retries, completion_deadline,
                              include_input_time, now, owner, team, tags, query_name, correlation_id)
        if not run_asynchronously:  # plans against this client's own registry: no Redis needed
            if not self.direct:
                raise InvalidQueryError("run_asynchronously", "False runs the query in this process, which needs "
                                        "the registry file and storage of the direct mode; over HTTP the service "
                                        "runs it (leave run_asynchronously=True)")
            attribution = check_attribution(
                owner if owner is not None else default_owner(),
                team if team is not None else self.settings.team or None, tags, query_name,
                correlation_id if correlation_id is not None else new_correlation_id())
            table, columns = self._prepare(input, output, input_times, now)
            return await asyncio.to_thread(
                self._run_in_process, table, columns, output, now, include_input_time, attribution
            )
        return AsyncJobHandle(await self.backend.submit(query), self)

    async def submit_checked(self, query: QueryRequest, attribution: Attribution) -> JobRecord:
        """The direct mode's submit: plan against the served registry, stage, enqueue; the record as written (what
        reading the job back would give, without the read)."""
        with self.reaching_redis("the query was not submitted"):
            registry, registry_version = await self.planning_registry()
            known = await self.known_groups()
        table, columns = self._prepare(query.input, query.output, query.input_times, query.submitted_at, registry)
        if query.resource_group not in known:
            raise InvalidQueryError(
                "resources.resource_group",
                f"unknown resource group {query.resource_group!r}; known groups: {', '.join(known)}",
            )
        job_id = uuid.uuid4().hex
        with self.reaching_redis("the query was not submitted (had the connection broken during the final "
                                 f"write, `jobqueue jobs` would list job {job_id})"):
            record = await self.submit_record(PreparedSubmission(
                table, columns, query.output, query.resource_group, job_id, query.submitted_at, query.max_retries,
                query.deadline, include_input_time=query.include_input_time, attribution=attribution,
                registry_version=registry_version,
            ))
        assert record is not None  # not exclusive: an id taken raises
        return record

    async def submit_prepared(self, request: PreparedSubmission) -> bool:
        """Stage a checked input and enqueue it under `request.job_id`. With `request.exclusive`, a job id
        that already exists is not submitted again (returns False). See `submit_record`."""
        return await self.submit_record(request) is not None

    async def submit_record(self, request: PreparedSubmission) -> JobRecord | None:
        """`submit_prepared`, returning the record as written (None: exclusive, and the id exists).

        Quotas (`jobqueue.quotas`, unless `request.enforce_quotas` is off): the input rows are checked before
        anything is staged, the owner's and team's unfinished jobs before staging and again, atomically, with the
        enqueue; `QuotaExceededError` names the quota, and nothing stays staged."""
        job_id, table = request.job_id, request.table
        owner, team = request.attribution.owner, request.attribution.team
        quotas = quotas_for(self.settings, owner, team) if request.enforce_quotas else []
        check_input_rows(quotas, table.num_rows)
        queued = queued_quotas(quotas)
        for quota, current in zip(queued, await self.store.active_jobs(queued), strict=True):
            if current >= quota.limit:  # full already: refuse before staging (the script decides the race)
                raise quota.exceeded(current)
        input_uri = job_uri(self.settings.staging, self.settings.environment, job_id, "input.parquet")
        job = QueryJob(
            job_id=job_id, environment=self.settings.environment, resource_group=request.group,
            output=list(request.output), input_uri=input_uri, input_columns=request.columns,
            input_rows=table.num_rows, submitted_at=request.submitted_at, max_retries=request.max_retries,
            completion_deadline=request.deadline, include_input_time=request.include_input_time,
            registry_version=request.registry_version, **time_range(table), **request.attribution.model_dump(),
        )
        record = JobRecord(
            job_id=job.job_id, status=JobStatus.QUEUED, resource_group=job.resource_group,
            output=job.output, input_rows=job.input_rows, submitted_at=job.submitted_at,
            max_retries=job.max_retries, completion_deadline=job.completion_deadline,
            **request.attribution.model_dump(),
            registry_version=job.registry_version,
        )
        if request.exclusive and await self.redis.exists(self.keys.job(job_id)):
            return None
        if table.nbytes <= STAGE_INLINE_BYTES and is_local(input_uri):  # ~1 ms: less than a hop to a thread
            self.storage.write_table(table, input_uri)
        else:
            await asyncio.to_thread(self.storage.write_table, table, input_uri)
        try:
            return record if await self._submit(record, job, request.exclusive, queued) else None
        except QuotaExceededError:  # another submit took the last slot while this one staged
            await self.storage.discard_job_files(job_id)
            raise

    def _prepare(
        self, input: Any, output: list[str], input_times: Any, now: datetime, registry: Registry | None = None
    ) -> tuple[pa.Table, list[str]]:
        if isinstance(output, str) or not isinstance(output, (list, tuple)):
            raise InvalidQueryError("output", "must be a list of 'namespace.feature' names")
        table = to_arrow(input)
        if table.num_rows > self.settings.max_input_rows:
            raise InvalidQueryError("input", f"has {table.num_rows} rows, over JOBQUEUE_MAX_INPUT_ROWS="
                                    f"{self.settings.max_input_rows}; split it into several queries or raise the limit")
        if table.nbytes > self.settings.max_input_bytes:
            raise InvalidQueryError("input", f"is {table.nbytes} bytes, over JOBQUEUE_MAX_INPUT_BYTES="
                                    f"{self.settings.max_input_bytes}; split it into several queries or raise "
                                    "the limit")
        columns = list(table.column_names)
        # raises InvalidQueryError on any mismatch
        plan_query(columns, output, self.registry if registry is None else registry)
        return with_times(table, input_times, now), columns

    async def _submit(self, record: JobRecord, job: QueryJob, exclusive: bool, quotas: list[Quota]) -> bool:
        """Create the record and enqueue the job atomically (`JobStore.submit`), and wake the manager and the
        group's idle consumers from the same script."""
        enqueued_ms = int(job.submitted_at.timestamp() * 1000)
        body = job.model_dump(mode="json")
        if body["registry_version"] is None:  # a payload that pins no version stays one older consumers take
            del body["registry_version"]
        payload = serialize_job(ARQ_FUNCTION, (), {"job": body}, None, enqueued_ms, serializer=serializer.dumps)
        return await self.store.submit(record, self.keys.queue(job.resource_group), payload,
                                       self.settings.job_ttl_seconds * 1000, exclusive=exclusive, quotas=quotas,
                                       wake=(self.keys.events, submitted_event(job.resource_group)))
        # False: another manager won the race; its staged input is the same file

    def _run_in_process(
        self, table: pa.Table, columns: list[str], output: list[str], now: datetime, include_input_time: bool,
        attribution: Attribution,
    ) -> AsyncLocalResult:
        from jobqueue.engine.execute import PreparedQuery  # the engine is only needed for in-process runs

        job_id = uuid.uuid4().hex
        input_uri = job_uri(self.settings.staging, self.settings.environment, job_id, "input.parquet")
        self.storage.write_table(table, input_uri)
        job = QueryJob(
            job_id=job_id, environment=self.settings.environment, resource_group="in-process",
            output=list(output), input_uri=input_uri, input_columns=columns, input_rows=table.num_rows,
            submitted_at=now, include_input_time=include_input_time, **time_range(table), **attribution.model_dump(),
        )
        succeeded = False
        started = datetime.now(UTC)
        try:
            outcome = PreparedQuery(job, self.registry, self.settings, consumer_id="in-process").execute()
            succeeded = True
        finally:  # the staged input, and the result folder of a failed run, are of no use to anyone
            self.storage.remove_job_files(job_id, result=not succeeded)
        record = JobRecord(
            job_id=job_id, status=JobStatus.SUCCEEDED, resource_group=job.resource_group, output=job.output,
            input_rows=job.input_rows, submitted_at=now, started_at=started, finished_at=datetime.now(UTC),
            consumer_id="in-process", progress=1.0, attempts=1, max_retries=job.max_retries,
            result_uri=outcome.result_uri, summary=outcome.summary, **attribution.model_dump(),
        )
        return AsyncLocalResult(record, self.storage)

    async def resolve_job_id(self, job_id: str) -> str:
        """The full id of the job `job_id` names: itself, or the one job whose id starts with it (the progress
        bar shows 8 characters). `AmbiguousJobIdError` lists the jobs a shared prefix matches;
        `JobNotFoundError` when none does."""
        return await self.backend.resolve_job_id(job_id)

    async def get_job(self, job_id: str) -> JobRecord:
        """The record of a job, by its id or a unique prefix of it; a queued one says why it waits (`wait_reason`)."""
        return await self.backend.get_job(job_id)

    def job(self, job_id: str) -> AsyncJobHandle:
        return AsyncJobHandle(job_id, self)

    async def cancel(self, job_id: str, wait: float | None = 30.0) -> JobRecord:
        """Cancel a job. A queued one is cancelled at once and leaves its queue; a running one is
        interrupted by its consumer (temp files removed), and this waits up to `wait` seconds for
        that (over HTTP, at most 60). Cancelling a cancelled job is a no-op; a finished one raises
        `JobStateError`. `job_id` may be a unique prefix of the id."""
        return await self.backend.cancel(job_id, wait)

    async def read_result(self, record: JobRecord) -> pa.Table:
        """A succeeded job's result (`ResultGoneError` once retention removed it)."""
        return await self.backend.read_result(record)

    async def jobs(self, *, owner: str | None = None, team: str | None = None, state: JobStatus | str | None = None,
                   resource_group: str | None = None, tags: dict[str, str] | None = None,
                   query_name: str | None = None, submitted_after: datetime | None = None,
                   submitted_before: datetime | None = None, limit: int = 50) -> list[JobRecord]:
        """Jobs newest first, every condition given holding (over HTTP, only those the token may see)."""
        wanted = JobFilter(group=resource_group, state=JobStatus(state) if state is not None else None, owner=owner,
                           team=team, query_name=query_name, tags=dict(tags or {}))
        return await self.backend.jobs(wanted, limit, submitted_after, submitted_before)

    async def cancel_many(self, *, owner: str | None = None, team: str | None = None,
                          state: JobStatus | str | None = None, resource_group: str | None = None,
                          tags: dict[str, str] | None = None, query_name: str | None = None,
                          submitted_after: datetime | None = None,
                          submitted_before: datetime | None = None) -> CancelManyResult:
        """Cancel every queued or running job matching all conditions given (at least one: `InvalidQueryError`
        otherwise, so that nothing cancels everything by accident)."""
        values = {"owner": owner, "team": team, "state": state, "resource_group": resource_group,
                  "tags": tags or None, "query_name": query_name, "submitted_after": submitted_after,
                  "submitted_before": submitted_before}
        try:
            wanted = CancelFilter.model_validate({k: v for k, v in values.items() if v is not None})
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "filter"
            raise InvalidQueryError(field, str(err["msg"]).removeprefix("Value error, ")) from None
        return await self.backend.cancel_many(wanted)

    async def groups(self) -> list[GroupStatus]:
        """Each resource group's consumers, queue and the manager's last decision (`jobqueue status`)."""
        return await self.backend.groups()

    status = groups

    async def schedules(self) -> ScheduleList:
        return await self.backend.schedules()

    async def run_schedule(self, name: str) -> ScheduleAction:
        return await self.backend.schedule_action(name, "run")

    async def pause_schedule(self, name: str) -> ScheduleAction:
        return await self.backend.schedule_action(name, "pause")

    async def resume_schedule(self, name: str) -> ScheduleAction:
        return await self.backend.schedule_action(name, "resume")

    async def registry_current(self) -> RegistryVersionBody:
        """The registry version new jobs are planned against, with its content."""
        return await self.backend.registry_current()

    async def registry_history(self) -> RegistryHistory:
        return await self.backend.registry_history()

    async def registry_version(self, ref: str) -> RegistryVersionBody:
        """One version, by number (`3`) or id (`3-9f8e7d6c5b4a`)."""
        try:
            parse_version_ref(ref)
        except ValueError as e:
            raise InvalidQueryError("version", str(e)) from None
        return await self.backend.registry_version(ref)

    async def apply_registry(self, registry: Path | str | Registry, applied_by: str | None = None) -> RegistryApplied:
        """Validate a registry file (relative paths against its directory) and store it as the current version
        (over HTTP: an admin token; the API records the token's owner as who applied it)."""
        parsed = registry if isinstance(registry, Registry) else load_registry(Path(registry))
        return await self.backend.apply_registry(parsed, applied_by)




@dataclass(frozen=True)
class PreparedSubmission:
    """What `submit_prepared` stages and enqueues: an input already checked and timed (`__ts__`/`__row__`)."""

    table: pa.Table
    columns: list[str]  # the input's own columns (before `__ts__`/`__row__` were added)
    output: list[str]
    group: str
    job_id: str
    submitted_at: datetime
    max_retries: int = 2
    deadline: datetime | None = None
    exclusive: bool = False  # an id that already exists is not submitted again (deterministic ids)
    include_input_time: bool = False  # the result gets `input_time`, each row's as-of time
    attribution: Attribution = Attribution()  # who the job is for (`jobqueue.attribution`), checked already
    registry_version: str | None = None  # the registry version it was planned against (`planning_registry`)
    enforce_quotas: bool = True  # False: counted, never refused (scheduled runs: `jobqueue.quotas`)


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


class JobQueueClient:
    """Synchronous twin of `AsyncJobQueueClient`: same arguments, blocking calls."""

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        self._async = AsyncJobQueueClient(settings, **kwargs)  # bad settings raise before a thread is started
        self._loop = LoopThread()
        # `close()`, or else garbage collection or interpreter exit, closes the connections on their own loop
        # (never left to the connections' `__del__`, which runs on the wrong thread or during shutdown)
        self._closer = weakref.finalize(self, _close_client, self._loop, self._async)

    @property
    def settings(self) -> Settings:
        return self._async.settings

    def offline_query(
        self, input: Any, output: list[str], input_times: Any = None, **kwargs: Any
    ) -> JobHandle | LocalResult:
        """Submit one offline (point-in-time) query; blocks only while the input is checked and staged.

        `input`: the rows, as a dict of columns, a pandas DataFrame or a pyarrow Table; columns are named
        `<namespace>.<feature>` and include the primary key of each output namespace (`user.id`).
        `output`: the features to fetch, as `<namespace>.<feature>` (`["user.f0"]`).
        `input_times`: the time each row is answered as of, one per row (a list of datetimes, a pandas
        Series or a pyarrow array). Default: now, the submission time, for every row. Naive times are
        UTC. A feature's value is its latest source row with `ts <= input time`.
        Keywords: `run_asynchronously` (default True: queue it and return a `JobHandle`; False: run it in
        this process and return its finished `LocalResult`), `resources=ResourceRequests(resource_group=...)`,
        `max_retries` (default 2) and `completion_deadline` (a time, or a delay from now).

        The result (`to_arrow()`, `to_pandas()`) has the input's columns, then each requested feature not
        already among them, in a column named `<namespace>.<feature>` (`user.f0`); rows in input order.
        `performance_summary` is a `jobqueue.PerformanceSummary` (a pydantic model: attributes,
        `.model_dump()` for a dict), set once the job has succeeded. Raises `InvalidQueryError` (naming the
        argument) before anything is submitted, and `RedisUnavailableError` when Redis cannot be reached.
        """
        result = self._loop.run(self._async.offline_query(input, output, input_times, **kwargs))
        if isinstance(result, AsyncLocalResult):
            return LocalResult(result, self._loop)
        return JobHandle(result, self._loop)

    def job(self, job_id: str) -> JobHandle:
        """A handle on a submitted job, by its id or a unique prefix of it."""
        return JobHandle(self._async.job(self._loop.run(self._async.resolve_job_id(job_id))), self._loop)

    def get_job(self, job_id: str) -> JobRecord:
        return self._loop.run(self._async.get_job(job_id))

    def cancel(self, job_id: str, wait: float | None = 30.0) -> JobRecord:
        return self._loop.run(self._async.cancel(job_id, wait))

    def jobs(self, **filters: Any) -> list[JobRecord]:
        """See `AsyncJobQueueClient.jobs`: owner, team, state, resource_group, tags, query_name,
        submitted_after, submitted_before, limit."""
        return self._loop.run(self._async.jobs(**filters))

    def cancel_many(self, **filters: Any) -> CancelManyResult:
        return self._loop.run(self._async.cancel_many(**filters))

    def groups(self) -> list[GroupStatus]:
        return self._loop.run(self._async.groups())

    status = groups

    def schedules(self) -> ScheduleList:
        return self._loop.run(self._async.schedules())

    def run_schedule(self, name: str) -> ScheduleAction:
        return self._loop.run(self._async.run_schedule(name))

    def pause_schedule(self, name: str) -> ScheduleAction:
        return self._loop.run(self._async.pause_schedule(name))

    def resume_schedule(self, name: str) -> ScheduleAction:
        return self._loop.run(self._async.resume_schedule(name))

    def registry_current(self) -> RegistryVersionBody:
        return self._loop.run(self._async.registry_current())

    def registry_history(self) -> RegistryHistory:
        return self._loop.run(self._async.registry_history())

    def registry_version(self, ref: str) -> RegistryVersionBody:
        return self._loop.run(self._async.registry_version(ref))

    def apply_registry(self, registry: Path | str | Registry, applied_by: str | None = None) -> RegistryApplied:
        return self._loop.run(self._async.apply_registry(registry, applied_by))

    def close(self) -> None:
        """Close the Redis connections and stop the client's loop thread; a second call does nothing."""
        self._closer()

    def __enter__(self) -> JobQueueClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_client(loop: LoopThread, client: AsyncJobQueueClient) -> None:
    if loop.is_current():  # collected on its own loop thread: it cannot wait for itself; the loop dies with it
        return
    try:
        loop.run(client.aclose())
    finally:
        loop.stop()
