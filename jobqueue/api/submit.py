"""`POST /v1/jobs`: submit an offline query. The body is the input, an Arrow IPC stream or a Parquet file
(`Content-Type` says which); everything else is a query parameter, so that any HTTP client (curl) can submit:

    curl -X POST "$URL/v1/jobs?output=user.f0&output=user.f1&tag=project=churn" \\
         -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/vnd.apache.parquet" \\
         --data-binary @input.parquet

The owner and team are the token's, never the client's. The API checks and stages the input exactly as the SDK
does (`AsyncJobQueueClient.offline_query`: the same `InvalidQueryError` texts, as 422 naming the field), and only
the small job payload goes through Redis. Quotas are the SDK's too (`jobqueue.quotas`): over one, 429 naming it.

With S3 storage, an input can instead be PUT beforehand (`POST /v1/uploads`, `jobqueue.api.uploads`) and submitted
by reference, `?upload=<ref>` with no body: the staged object is checked exactly as a body would be (the same texts),
from its footer and batch by batch, and streamed into the job's input (`jobqueue.staged_input`): an upload is never
decoded whole in the API's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from datetime import UTC, datetime
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from fastapi import APIRouter, Query, Request

from jobqueue.api.deps import ApiError, Caller, Svc, allow, audit
from jobqueue.api.jobs import TagText, links_from, parse_tags
from jobqueue.api.responses import ARROW_STREAM_TYPE, ERRORS, INPUT_TYPES, PARQUET_TYPE, SUBMIT_ERRORS
from jobqueue.api.uploads import open_staged, using_upload
from jobqueue.api.wire import IsoTime
from jobqueue.auth.policy import Action
from jobqueue.backend import query_request
from jobqueue.direct_backend import DirectBackend
from jobqueue.errors import InvalidQueryError
from jobqueue.models import JobRecord, Priority
from jobqueue.sharding import check_num_shards
from jobqueue.sizes import INLINE_INPUT_BYTES
from jobqueue.staged_input import StagedInput

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses={**ERRORS, **SUBMIT_ERRORS})

BODY = {"required": False, "description": "The query input: an Arrow IPC stream or a Parquet file with the primary "
        "key of every output namespace (columns `namespace.feature`). None with `upload`.",
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in INPUT_TYPES}}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to be over `limit` bytes."""
    too_big = ApiError(413, f"the request body is over JOBQUEUE_API_MAX_BODY_BYTES={limit} bytes; split the input "
                       "into several queries, or raise the setting", reason="body_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        parts.append(chunk)
    return b"".join(parts)


def decode_input(body: bytes, content_type: str) -> pa.Table:
    """The body as an Arrow table; 415 for another media type, 422 (`input`) when it does not decode."""
    media = content_type.split(";")[0].strip().lower()
    if media not in INPUT_TYPES:
        raise ApiError(415, f"Content-Type {media or '(none)'!r} is not a query input; send "
                       f"{ARROW_STREAM_TYPE} (an Arrow IPC stream) or {PARQUET_TYPE}", field="Content-Type",
                       reason="unsupported_media_type")
    try:
        if media == PARQUET_TYPE:
            return pq.read_table(io.BytesIO(body))
        return ipc.open_stream(body).read_all()
    except (pa.ArrowException, OSError, ValueError) as e:
        kind = "a Parquet file" if media == PARQUET_TYPE else "an Arrow IPC stream"
        raise InvalidQueryError("input", f"the body is not {kind}: {e}") from None


def split_times(table: pa.Table, column: str | None) -> tuple[pa.Table, Any]:
    if column is None:
        return table, None
    if column not in table.column_names:
        raise InvalidQueryError("input_times_column", f"{column!r} is not a column of the input; its columns: "
                                f"{', '.join(table.column_names)}")
    return table.drop_columns([column]), table.column(column)


@router.post("", response_model=JobRecord, status_code=201, summary="Submit an offline query.",
             openapi_extra={"requestBody": BODY, **links_from("/job_id")})
async def submit(
    request: Request, identity: Caller, svc: Svc,
    output: Annotated[list[str], Query(description="Output features, `namespace.feature` (repeatable).")],
    resource_group: Annotated[str, Query(description="The resource group (queue and consumer pool).")] = "default",
    max_retries: Annotated[int, Query(description="Failed attempts retried, 0 to 100.")] = 2,
    completion_deadline: Annotated[IsoTime | None, Query(description="The job expires if not done by then "
                                                          "(ISO 8601; naive: UTC).")] = None,
    include_input_time: Annotated[bool, Query(description="The result gets `input_time`, each row's as-of time.")]
    = False,
    input_times_column: Annotated[str | None, Query(description="The input column holding each row's as-of time "
                                                    "(taken out of the input); default: now for every row.")] = None,
    tag: Annotated[list[TagText] | None, Query(description="A tag, NAME=VALUE (repeatable).")] = None,
    query_name: Annotated[str | None, Query(description="What the query is, for listings and logs.")] = None,
    correlation_id: Annotated[str | None, Query(description="The caller's id for the request (default: new).")]
    = None,
    priority: Annotated[Priority, Query(description="Weights the owner's share of the group: high 4, normal 2, "
                                        "low 1; it does not jump the whole queue.")] = Priority.NORMAL,
    num_shards: Annotated[str | None, Query(description="Split the query into this many shards (1 to 1024), or "
                                            "`auto`; the reply is the parent job (`shard_ids`).")] = None,
    num_workers: Annotated[int | None, Query(description="At most this many shards run at once (with num_shards; "
                                             "default: no cap).")] = None,
    upload: Annotated[str | None, Query(description="An upload reference of the caller (`POST /v1/uploads`) whose "
                                        "staged object is the input, instead of a body.")] = None,
) -> JobRecord:
    allow(identity, Action.SUBMIT_JOB, svc)
    tags = parse_tags(tag)
    shards: int | str | None = num_shards
    if num_shards is not None and num_shards != "auto":
        # ASCII digits only ("²".isdigit() is true, and int() refuses it); any other text: the check names the field
        shards = int(num_shards) if num_shards.isascii() and num_shards.isdigit() else num_shards
    check_num_shards(shards, num_workers)
    async with contextlib.AsyncExitStack() as stack:
        table: pa.Table | StagedInput
        if upload is None:
            body = await read_body(request, svc.settings.api_max_body_bytes)
            content_type = request.headers.get("content-type", "")
            if len(body) <= INLINE_INPUT_BYTES:
                table = decode_input(body, content_type)
            else:
                table = await asyncio.to_thread(decode_input, body, content_type)
            del body
            table, input_times = split_times(table, input_times_column)
        else:
            if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
                raise InvalidQueryError("upload", "give the input either as the body or as an upload reference, "
                                        "not both")
            staged = await stack.enter_async_context(using_upload(svc, identity, upload))
            # checked and staged batch by batch (its times with it): never the whole table in memory
            table = await asyncio.to_thread(open_staged, svc, staged, input_times_column)
            input_times = None
        query = query_request(table, output, input_times, resource_group, max_retries, completion_deadline,
                              include_input_time, datetime.now(UTC), identity.owner, identity.team, tags, query_name,
                              correlation_id, priority=priority, num_shards=shards, num_workers=num_workers)
        # the record as written by the submit script (a sharded query's parent, with its `shard_ids`, as derived
        # from its shards): what reading it back would give (a GET of the job adds why it waits), without that read
        record = await DirectBackend(svc.client).submit_record(query)
    svc.metrics.submitted.labels(svc.metrics.team(identity.team)).inc()
    audit(identity, Action.SUBMIT_JOB, job_id=record.job_id, resource_group=record.resource_group,
          rows=record.input_rows, query_name=record.query_name, upload=upload)
    return record
