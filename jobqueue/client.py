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
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
from arq.connections import ArqRedis
from pydantic import SecretStr, ValidationError

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
from jobqueue.attribution import check_attribution, default_owner, new_correlation_id
from jobqueue.backend import JobQueueBackend, query_request
from jobqueue.connect import HttpTarget, resolve_target
from jobqueue.direct_backend import DirectBackend
from jobqueue.direct_submit import PreparedSubmission, planning_registry, prepare_input, submit_prepared
from jobqueue.errors import (
    ConfigError,
    InvalidQueryError,
    RedisUnavailableError,
)
from jobqueue.groups import ResourceGroup, load_groups_cached
from jobqueue.handles import AsyncJobHandle, AsyncLocalResult
from jobqueue.http_backend import HttpBackend
from jobqueue.in_process import run_in_process, run_remotely
from jobqueue.job_filter import JobFilter
from jobqueue.jobstore import JobStore
from jobqueue.keys import Keys
from jobqueue.lookup_cache import LookupCache
from jobqueue.models import JobRecord, JobStatus, Priority, ResourceRequests
from jobqueue.outage import REDIS_UNREACHABLE, redacted
from jobqueue.redis import connect_redis
from jobqueue.registry import Registry, load_registry
from jobqueue.registry_store import RegistryStore
from jobqueue.registry_versions import content_hash, document_of, parse_version_ref
from jobqueue.settings import Settings, load_settings
from jobqueue.storage import Storage
from jobqueue.sync_client import JobQueueClient

__all__ = ["AsyncJobQueueClient", "JobQueueClient", "PreparedSubmission"]  # JobQueueClient: `jobqueue.sync_client`


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
        """The registry a new job is planned against and the version it pins (`jobqueue.direct_submit`)."""
        return await planning_registry(self)

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
        priority: Priority | str = Priority.NORMAL,
        num_shards: int | str | None = None,
        num_workers: int | None = None,
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

        `priority`: "high", "normal" (default) or "low" weights the owner's share of the group (4, 2, 1:
        `jobqueue.fair_share`); it does not jump the whole queue.
        `num_shards` (N, or "auto": ceil(rows / JOBQUEUE_SHARD_TARGET_ROWS)): split the input into N shards by a
        stable hash of the first output namespace's primary key, each a job of its own under one parent job whose
        handle this returns (`jobqueue.sharding`); `num_workers`: at most this many shards run at once, across
        consumers (default: no cap). Results come back in input order.
        """
        resources = resources or ResourceRequests()
        now = datetime.now(UTC)
        query = query_request(input, output, input_times, resources.resource_group, max_retries, completion_deadline,
                              include_input_time, now, owner, team, tags, query_name, correlation_id,
                              priority=priority, num_shards=num_shards, num_workers=num_workers)
        if num_shards is not None and not run_asynchronously:
            raise InvalidQueryError("num_shards", "shards run on the service's consumers: leave "
                                    "run_asynchronously=True")
        if not run_asynchronously and not self.direct:
            return await run_remotely(self, query)
        if not run_asynchronously:  # plans against this client's own registry: no Redis needed
            attribution = check_attribution(
                owner if owner is not None else default_owner(),
                team if team is not None else self.settings.team or None, tags, query_name,
                correlation_id if correlation_id is not None else new_correlation_id())
            table, columns = prepare_input(self, input, output, input_times, now)
            return await asyncio.to_thread(
                run_in_process, self, table, columns, output, now, include_input_time, attribution
            )
        return AsyncJobHandle(await self.backend.submit(query), self)

    async def submit_prepared(self, request: PreparedSubmission) -> bool:
        """Stage a checked input and enqueue it under `request.job_id` (`jobqueue.direct_submit`). With
        `request.exclusive`, a job id that already exists is not submitted again (returns False)."""
        return await submit_prepared(self, request)

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
                   submitted_before: datetime | None = None, limit: int = 50, parent: str | None = None,
                   include_shards: bool = False) -> list[JobRecord]:
        """Jobs newest first, every condition given holding (over HTTP, only those the token may see). A sharded
        query is listed once, as its parent job; its shards with `parent=<its id>`, every job's with
        `include_shards=True`."""
        wanted = JobFilter(group=resource_group, state=JobStatus(state) if state is not None else None, owner=owner,
                           team=team, query_name=query_name, tags=dict(tags or {}), parent=parent,
                           shards=include_shards)
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

    async def schedule_runs(self, name: str, limit: int = 10) -> ScheduleRuns:
        """The last `limit` runs of a schedule, newest first (`jobqueue schedules runs NAME`)."""
        return await self.backend.schedule_runs(name, limit)

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

