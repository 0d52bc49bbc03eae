"""`/v1/jobs`: read a job (by id or unique prefix), list with filters and cursors, cancel one or many, download the
result, the performance summary and attempts. Submitting is `jobqueue.api.submit`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import StringConstraints
from starlette.responses import Response

from jobqueue.api.deps import ApiError, Caller, Services, Svc, allow, audit, may, not_found
from jobqueue.api.listing import CURSOR_PATTERN, find_page
from jobqueue.api.responses import ERRORS, PARQUET, PARQUET_TYPE
from jobqueue.api.wire import CancelFilter, CancelManyResult, IsoTime, JobPage, JobSummary
from jobqueue.auth.identity import Identity, Role
from jobqueue.auth.policy import Action
from jobqueue.direct_backend import DirectBackend
from jobqueue.errors import AmbiguousJobIdError, InvalidQueryError, JobNotFoundError, JobStateError
from jobqueue.finish_watch import FinishWatch
from jobqueue.job_filter import JobFilter
from jobqueue.listing_plan import ListingQuery, Position, SortKey
from jobqueue.models import JOB_ID_PATTERN, JobRecord, JobStatus
from jobqueue.storage import is_local, local_path

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)
CHUNK = 1 << 20

Owner = Annotated[str | None, Query(description="Only jobs of this owner.")]
Team = Annotated[str | None, Query(description="Only jobs of this team.")]
State = Annotated[JobStatus | None, Query(description="Only jobs in this state.")]
Group = Annotated[str | None, Query(description="Only jobs of this resource group.")]
TAG_PATTERN = r"^[^=]+=.*$"
TagText = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
Tag = Annotated[list[TagText] | None, Query(description="Only jobs with this tag, NAME=VALUE (repeatable).")]
QueryName = Annotated[str | None, Query(description="Only jobs with this query name.")]
After = Annotated[IsoTime | None, Query(description="Only jobs submitted at or after this time (ISO 8601).")]
Before = Annotated[IsoTime | None, Query(description="Only jobs submitted at or before this time (ISO 8601).")]
Sort = Annotated[SortKey, Query(description="Order by submission time, by wait (submission to first start: only "
                                "jobs that started) or by duration (first start to finish: only jobs that finished "
                                "after starting).")]
Parent = Annotated[str | None, Query(description="Only the shards of this sharded query (its parent's job id).",
                                    pattern=JOB_ID_PATTERN)]
IncludeShards = Annotated[bool, Query(description="List the shards of sharded queries too. By default a sharded "
                                      "query is listed once, as its parent job (its shards: `parent`).")]
Order = Annotated[Literal["desc", "asc"], Query(description="desc: newest, longest first; asc: the reverse.")]


def listing_scope(identity: Identity, svc: Services) -> tuple[str | None, str | None]:
    """The policy's narrowing of a listing, as `ListingQuery.only_owner` and `also_team`: a `user` sees their own
    jobs, and their team's too when users see their team's (JOBQUEUE_USERS_SEE_TEAM_JOBS); anyone else, every job
    (None, None). The listing reads only the indexes of what they may see; each record is checked again."""
    if identity.role is not Role.USER:
        return None, None
    return identity.owner, identity.team if svc.rules.users_see_team_jobs and identity.team else None


def listing_query(identity: Identity, svc: Services, wanted: JobFilter, submitted_after: datetime | None,
                  submitted_before: datetime | None, sort: SortKey = SortKey.SUBMITTED, order: str = "desc",
                  cursor: str | None = None, limit: int = 50) -> ListingQuery:
    """The listing the API and the console run for `identity`: its filter, order and page, and the policy's scope."""
    owner, team = listing_scope(identity, svc)
    return ListingQuery(
        wanted=wanted, sort=sort, descending=order != "asc", limit=limit,
        submitted_after_ms=submitted_after.timestamp() * 1000 if submitted_after is not None else None,
        submitted_before_ms=submitted_before.timestamp() * 1000 if submitted_before is not None else None,
        after=Position.decode(cursor) if cursor else None, only_owner=owner, also_team=team)


def parse_tags(items: list[str] | None) -> dict[str, str]:
    """`tag` parameters (NAME=VALUE, checked by `TAG_PATTERN`) as a mapping."""
    return dict(item.partition("=")[::2] for item in items or [])


async def visible_job(identity: Identity, job_id: str, action: Action, svc: Services) -> JobRecord:
    """The record `job_id` (an id or a unique prefix) names, if `identity` may do `action` on it; else 404 (a
    job the caller may not see is not found, and a prefix is resolved among the jobs it may see)."""
    try:
        record = await svc.client.get_job(job_id)
    except AmbiguousJobIdError as e:
        records = await asyncio.gather(*(svc.client.store.get(c) for c in e.candidates))
        seen = [r for r in records if r is not None and may(identity, action, r, svc)]
        if len(seen) > 1:
            raise ApiError(409, str(AmbiguousJobIdError(job_id, [r.job_id for r in seen])), field="job_id") from None
        if not seen:
            raise ApiError(404, not_found(job_id, svc)) from None
        record = await svc.client.get_job(seen[0].job_id)
    except JobNotFoundError:
        raise ApiError(404, not_found(job_id, svc)) from None
    allow(identity, action, svc, record)
    return record


@router.get("/{job_id}", response_model=JobRecord, summary="A job's record (by id or a unique prefix).")
async def get_job(job_id: str, identity: Caller, svc: Svc, wait: Annotated[float, Query(
    ge=0, le=60, description="Seconds to hold the answer while the job is not final (a long poll: it is answered "
    "as soon as the job ends); 0: at once.")] = 0) -> JobRecord:
    record = await visible_job(identity, job_id, Action.READ_JOB, svc)
    if wait <= 0 or record.status.is_final:
        return record
    watch = FinishWatch(svc.client.redis, svc.client.keys.job_finished(record.job_id), record.job_id)
    try:
        if not await watch.subscribe():  # Redis unreachable: answer what was read
            return record
        # the same job, so the same decision: plain reads (a final record needs no wait reason)
        latest = await svc.client.store.get(record.job_id)  # a finish before subscribing
        if latest is not None and not latest.status.is_final and await watch.wait(wait):
            latest = await svc.client.store.get(record.job_id)
    finally:
        await asyncio.shield(watch.close())
    if latest is not None and latest.status.is_final:
        return latest
    return await visible_job(identity, record.job_id, Action.READ_JOB, svc)  # still going: with why it waits


def links_from(pointer: str) -> dict[str, Any]:
    """OpenAPI links from a response holding a job id at `pointer` to the routes of that job (schemathesis'
    stateful tests follow them)."""
    target = {"parameters": {"job_id": f"$response.body#{pointer}"}}
    return {"responses": {"200" if pointer != "/job_id" else "201": {"links": {
        "GetJob": {"operationId": "get_job", **target}, "GetSummary": {"operationId": "get_summary", **target},
        "GetResult": {"operationId": "get_result", **target}, "CancelJob": {"operationId": "cancel_job", **target},
    }}}}


@router.get("", response_model=JobPage, summary="Jobs, newest first (or by wait or duration), filtered and "
            "cursor-paginated.",
            openapi_extra=links_from("/jobs/0/job_id"))
async def list_jobs(identity: Caller, svc: Svc, owner: Owner = None, team: Team = None, state: State = None,
                    resource_group: Group = None, tag: Tag = None, query_name: QueryName = None,
                    submitted_after: After = None, submitted_before: Before = None,
                    parent: Parent = None, include_shards: IncludeShards = False,
                    sort: Sort = SortKey.SUBMITTED, order: Order = "desc",
                    limit: Annotated[int, Query(ge=1, le=1000, description="Jobs per page.")] = 50,
                    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.",
                                                         pattern=CURSOR_PATTERN)] = None,
                    ) -> JobPage:
    allow(identity, Action.LIST_JOBS, svc)
    wanted = JobFilter(group=resource_group, state=state, owner=owner, team=team, query_name=query_name,
                       tags=parse_tags(tag), parent=parent, shards=include_shards)
    client = svc.client
    query = listing_query(identity, svc, wanted, submitted_after, submitted_before, sort, order, cursor, limit)
    jobs, next_cursor = await find_page(client.store, client.redis, client.keys, query,
                                        lambda r: may(identity, Action.READ_JOB, r, svc),
                                        svc.settings.api_list_scan_limit)
    return JobPage(jobs=jobs, next_cursor=next_cursor)


@router.post("/cancel", response_model=CancelManyResult, summary="Cancel every job matching a filter.")
async def cancel_many(body: CancelFilter, request: Request, identity: Caller, svc: Svc) -> CancelManyResult:
    """Cancels the queued and running jobs that match every condition given and that the caller may cancel (a
    `user`: its own). At least one condition is needed, so that no call cancels everything by accident."""
    raw = await request.json()  # the body as sent (read already): a condition is left out, never null
    for name, value in raw.items() if isinstance(raw, dict) else ():
        if value is None:
            raise InvalidQueryError(name, "is null; leave a condition out instead")
    allow(identity, Action.CANCEL_MANY, svc)
    done = await DirectBackend(svc.client).cancel_many(body, lambda r: may(identity, Action.CANCEL_JOB, r, svc),
                                                       *listing_scope(identity, svc))
    svc.metrics.cancelled.labels(svc.metrics.team(identity.team)).inc(done.cancelled)
    audit(identity, Action.CANCEL_MANY, job_ids=done.job_ids, count=done.cancelled,
          filter=body.model_dump(mode="json", exclude_none=True))
    return done


@router.post("/{job_id}/cancel", response_model=JobRecord, summary="Cancel one job.")
async def cancel_job(job_id: str, identity: Caller, svc: Svc,
                     wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for a running job to "
                                                  "stop (0: answer at once).")] = 0) -> JobRecord:
    """A queued job is cancelled at once; a running one is asked to stop (its consumer interrupts it).
    Cancelling a cancelled job changes nothing; a finished one is 409."""
    record = await visible_job(identity, job_id, Action.CANCEL_JOB, svc)
    try:
        done = await svc.client.cancel(record.job_id, wait=wait or None)
    except JobStateError as e:
        audit(identity, Action.CANCEL_JOB, job_id=record.job_id, outcome="refused", status=record.status.value)
        raise ApiError(409, str(e), reason="job_state") from None
    svc.metrics.cancelled.labels(svc.metrics.team(identity.team)).inc()
    audit(identity, Action.CANCEL_JOB, job_id=record.job_id, outcome=done.status.value, job_owner=record.owner)
    return done


class ResultFile(FileResponse):
    """A result file sent in blocks of CHUNK (Starlette's default, 64 KiB, is a thread hop and a send each)."""

    chunk_size = CHUNK


@router.get("/{job_id}/result", response_class=Response, responses=PARQUET,
            summary="The result of a succeeded job, as a Parquet file (streamed).")
async def get_result(job_id: str, identity: Caller, svc: Svc) -> Response:
    record = await visible_job(identity, job_id, Action.READ_RESULT, svc)
    if record.shard_ids:  # one file per shard, each served as the result of its own job
        raise ApiError(409, f"job {record.job_id} is a sharded query: its result is one Parquet file per shard, "
                       f"each with `__row__` (the input position of its rows); GET /v1/jobs/<shard id>/result for "
                       f"each of its shard_ids and order by __row__ (the SDK's to_arrow() does)", reason="job_state")
    if record.status is not JobStatus.SUCCEEDED or not record.result_uri:
        raise ApiError(409, f"job {record.job_id} is {record.status.value}; only a succeeded job has a result",
                       reason="job_state")
    uri, filename = record.result_uri, f"{record.job_id}.parquet"
    gone = ApiError(410, f"the result of job {record.job_id} is gone: results are kept for "
                    f"JOBQUEUE_RESULT_TTL_SECONDS ({svc.settings.result_ttl} s) after their job finished",
                    reason="result_gone")
    if is_local(uri):
        path = local_path(uri)
        if not path.is_file():
            raise gone
        return ResultFile(path, media_type=PARQUET_TYPE, filename=filename)
    fs, key = svc.client.storage.resolve(uri)
    try:
        stream = await asyncio.to_thread(fs.open_input_stream, key)
    except FileNotFoundError:
        raise gone from None

    def chunks() -> Iterator[bytes]:  # starlette runs a sync iterator in its thread pool
        with stream:
            while block := stream.read(CHUNK):
                yield bytes(block)

    return StreamingResponse(chunks(), media_type=PARQUET_TYPE,
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/{job_id}/summary", response_model=JobSummary, summary="Performance summary and attempts.")
async def get_summary(job_id: str, identity: Caller, svc: Svc) -> JobSummary:
    r = await visible_job(identity, job_id, Action.READ_JOB, svc)
    return JobSummary(job_id=r.job_id, status=r.status, attempts=r.attempts, max_retries=r.max_retries,
                      errors=r.errors, error=r.error, summary=r.summary, attempt_starts=r.attempt_starts,
                      attempt_ends=r.attempt_ends)

