"""The direct mode's submission: check an input against the limits and the served registry (`prepare_input`), stage
it and enqueue it in one atomic step (`JobStore.submit`), quotas enforced. `submit_checked` is the SDK's and the
API's entry point; `AsyncJobQueueClient.submit_prepared` the scheduler's runs'. An input may be a staged upload
(`jobqueue.staged_input`): checked and staged batch by batch, never whole in memory."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from arq.jobs import serialize_job

from jobqueue import serializer
from jobqueue.attribution import Attribution
from jobqueue.errors import InvalidQueryError, QuotaExceededError, RegistryMismatchError
from jobqueue.fair_share import FairShare
from jobqueue.inputs import time_range, to_arrow, with_times
from jobqueue.keys import ARQ_FUNCTION, submitted_event
from jobqueue.models import JobRecord, JobStatus, Priority, QueryJob
from jobqueue.plan import plan_query
from jobqueue.quotas import Quota, check_input_rows, queued_quotas, quotas_for
from jobqueue.registry import Registry
from jobqueue.sizes import INLINE_INPUT_BYTES
from jobqueue.staged_input import StagedInput, with_time_range, write_job_input
from jobqueue.storage import is_local, job_uri

if TYPE_CHECKING:
    from jobqueue.backend import QueryRequest
    from jobqueue.client import AsyncJobQueueClient


@dataclass(frozen=True)
class PreparedSubmission:
    """What `submit_prepared` stages and enqueues: an input already checked and timed (`__ts__`/`__row__`)."""

    table: pa.Table | StagedInput  # a staged upload: written to the job's input batch by batch
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
    priority: Priority = Priority.NORMAL  # weights the owner's share of the group (`jobqueue.fair_share`)


async def planning_registry(client: AsyncJobQueueClient) -> tuple[Registry, str | None]:
    """The registry a new job is planned against, and the version it pins: the current version in Redis when
    there is one, else this client's own (JOBQUEUE_REGISTRY_PATH, or the one given), pinning none (consumers
    then plan with their own file, as before versions existed). A client with a registry of its own that
    differs from the current version raises `RegistryMismatchError`: its file would say one thing and the
    job do another."""
    current = await client.registries.current_id()
    if current is None:
        return client.registry, None
    if client._local_hash is not None and not current.endswith(client._local_hash):
        served = await client.registries.version(current)
        raise RegistryMismatchError(
            f"{client.registry.origin} (JOBQUEUE_REGISTRY_PATH) is not the registry the service plans against: "
            f"the current version is {current}, applied {served.applied_at:%Y-%m-%d %H:%M:%S %Z}"
            + (f" by {served.applied_by}" if served.applied_by else "") + f" from {served.origin}. Apply "
            f"yours (`jobqueue registry apply {client.registry.origin}`), or unset JOBQUEUE_REGISTRY_PATH to "
            "plan against the current version; nothing was submitted")
    return await client.registries.registry(current), current


def prepare_input(client: AsyncJobQueueClient, input: Any, output: list[str], input_times: Any, now: datetime,
                  registry: Registry | None = None) -> tuple[pa.Table | StagedInput, list[str]]:
    """The input checked (limits, and the columns against the registry: `InvalidQueryError` naming the field) and
    timed (`__ts__`, `__row__`); its own columns. A staged upload is checked from its footer and its times column
    alone, and timed when it is written (`jobqueue.staged_input`)."""
    if isinstance(output, str) or not isinstance(output, (list, tuple)):
        raise InvalidQueryError("output", "must be a list of 'namespace.feature' names")
    table = input if isinstance(input, StagedInput) else to_arrow(input)
    if isinstance(table, StagedInput) and (not table.columns or table.num_rows == 0):
        raise InvalidQueryError("input", "is empty; pass at least one row with the primary key column")
    settings = client.settings
    if table.num_rows > settings.max_input_rows:
        raise InvalidQueryError("input", f"has {table.num_rows} rows, over JOBQUEUE_MAX_INPUT_ROWS="
                                f"{settings.max_input_rows}; split it into several queries or raise the limit")
    if table.nbytes > settings.max_input_bytes:
        raise InvalidQueryError("input", f"is {table.nbytes} bytes, over JOBQUEUE_MAX_INPUT_BYTES="
                                f"{settings.max_input_bytes}; split it into several queries or raise the limit")
    columns = list(table.columns if isinstance(table, StagedInput) else table.column_names)
    # raises InvalidQueryError on any mismatch
    plan_query(columns, output, client.registry if registry is None else registry)
    if isinstance(table, StagedInput):
        return with_time_range(table, now), columns
    return with_times(table, input_times, now), columns


async def submit_checked(client: AsyncJobQueueClient, query: QueryRequest, attribution: Attribution) -> JobRecord:
    """The direct mode's submit: plan against the served registry, stage, enqueue; the record as written (what
    reading the job back would give, without the read; a sharded query's parent as derived from its shards)."""
    with client.reaching_redis("the query was not submitted"):
        registry, registry_version = await planning_registry(client)
        known = await client.known_groups()
    args = (client, query.input, query.output, query.input_times, query.submitted_at, registry)
    staged = isinstance(query.input, StagedInput)
    table, columns = await asyncio.to_thread(prepare_input, *args) if staged else prepare_input(*args)
    if query.resource_group not in known:
        raise InvalidQueryError(
            "resources.resource_group",
            f"unknown resource group {query.resource_group!r}; known groups: {', '.join(known)}",
        )
    if query.num_shards is not None:
        from jobqueue.shard_submit import submit_sharded

        with client.reaching_redis("the sharded query was not submitted"):
            return await submit_sharded(client, query, attribution, table, columns, registry, registry_version)
    job_id = uuid.uuid4().hex
    with client.reaching_redis("the query was not submitted (had the connection broken during the final "
                               f"write, `jobqueue jobs` would list job {job_id})"):
        record = await submit_record(client, PreparedSubmission(
            table, columns, query.output, query.resource_group, job_id, query.submitted_at, query.max_retries,
            query.deadline, include_input_time=query.include_input_time, attribution=attribution,
            registry_version=registry_version, priority=query.priority,
        ))
    assert record is not None  # not exclusive: an id taken raises
    return record


async def submit_prepared(client: AsyncJobQueueClient, request: PreparedSubmission) -> bool:
    """Stage a checked input and enqueue it under `request.job_id`. With `request.exclusive`, a job id
    that already exists is not submitted again (returns False). See `submit_record`."""
    return await submit_record(client, request) is not None


async def submit_record(client: AsyncJobQueueClient, request: PreparedSubmission) -> JobRecord | None:
    """`submit_prepared`, returning the record as written (what reading the job back would give, without the
    read); None: `request.exclusive`, and the id exists.

    Quotas (`jobqueue.quotas`, unless `request.enforce_quotas` is off): the input rows are checked before
    anything is staged, the owner's and team's unfinished jobs before staging and again, atomically, with the
    enqueue; `QuotaExceededError` names the quota, and nothing stays staged."""
    job_id, table = request.job_id, request.table
    owner, team = request.attribution.owner, request.attribution.team
    quotas = quotas_for(client.settings, owner, team) if request.enforce_quotas else []
    check_input_rows(quotas, table.num_rows)
    queued = queued_quotas(quotas)
    for quota, current in zip(queued, await client.store.active_jobs(queued), strict=True):
        if current >= quota.limit:  # full already: refuse before staging (the script decides the race)
            raise quota.exceeded(current)
    input_uri = job_uri(client.settings.staging, client.settings.environment, job_id, "input.parquet")
    job = QueryJob(
        job_id=job_id, environment=client.settings.environment, resource_group=request.group,
        output=list(request.output), input_uri=input_uri, input_columns=request.columns,
        input_rows=table.num_rows, submitted_at=request.submitted_at, max_retries=request.max_retries,
        completion_deadline=request.deadline, include_input_time=request.include_input_time,
        registry_version=request.registry_version, priority=request.priority,
        **(table.time_range() if isinstance(table, StagedInput) else time_range(table)),
        **request.attribution.model_dump(),
    )
    record = JobRecord(
        job_id=job.job_id, status=JobStatus.QUEUED, resource_group=job.resource_group,
        output=job.output, input_rows=job.input_rows, submitted_at=job.submitted_at,
        max_retries=job.max_retries, completion_deadline=job.completion_deadline,
        **request.attribution.model_dump(),
        registry_version=job.registry_version, priority=job.priority,
    )
    if request.exclusive and await client.redis.exists(client.keys.job(job_id)):
        return None
    if isinstance(table, StagedInput):  # read while written: a broken read leaves no part of it behind
        try:
            await asyncio.to_thread(write_job_input, table, input_uri)
        except BaseException:
            await asyncio.shield(client.storage.discard_job_files(job_id))
            raise
    elif table.nbytes <= INLINE_INPUT_BYTES and is_local(input_uri):
        client.storage.write_table(table, input_uri)
    else:
        await asyncio.to_thread(client.storage.write_table, table, input_uri)
    try:
        created = await _enqueue(client, record, job, request.exclusive, queued,
                                 FairShare.of(client.settings, owner, team, request.priority))
    except QuotaExceededError:  # another submit took the last slot while this one staged
        await client.storage.discard_job_files(job_id)
        raise
    return record if created else None


async def _enqueue(
    client: AsyncJobQueueClient, record: JobRecord, job: QueryJob, exclusive: bool, quotas: list[Quota],
    fair: FairShare | None,
) -> bool:
    """Create the record and enqueue the job atomically (`JobStore.submit`, fairly scored with `fair`), and wake
    the manager and the group's idle consumers from the same script. False: the id exists (`exclusive`: another
    manager won the race; its staged input is the same file)."""
    return await client.store.submit(record, client.keys.queue(job.resource_group), arq_payload(job),
                                     client.settings.job_ttl_seconds * 1000, exclusive=exclusive, quotas=quotas,
                                     fair=fair, wake=(client.keys.events, submitted_event(job.resource_group)))


def arq_payload(job: QueryJob) -> bytes:
    """The arq job of a query job, as consumers take it."""
    body = job.model_dump(mode="json")
    # a payload without them stays one that older consumers take
    for optional in ("registry_version", "parent_id", "shard_of"):
        if body[optional] is None:
            del body[optional]
    if body["priority"] == Priority.NORMAL:  # likewise (the priority is the submit script's, not the consumer's)
        del body["priority"]
    enqueued_ms = int(job.submitted_at.timestamp() * 1000)
    return serialize_job(ARQ_FUNCTION, (), {"job": body}, None, enqueued_ms, serializer=serializer.dumps)
