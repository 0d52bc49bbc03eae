"""Presigned transfers, when the service's storage is S3: large inputs and results skip the API's request bodies.

    POST /v1/uploads                  {"size": 123, "content_type": ...} -> a reference and a presigned PUT URL
    POST /v1/jobs?upload=<ref>&...    submits the staged object (checked as a body is, batch by batch:
                                      `jobqueue.staged_input`)
    GET  /v1/jobs/{id}/result-url     a presigned GET of a succeeded job's result

With local storage there is nothing to presign: both answer 409 (`reason` `storage_not_s3`) saying what to do
instead (post the body; download `/v1/jobs/{id}/result`). A reference is its owner's only: another caller's
submit finds no such upload (404), as for a job it may not see.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pyarrow.fs as pafs
from fastapi import APIRouter

from jobqueue.api.deps import ApiError, Caller, Services, Svc, allow, audit
from jobqueue.api.jobs import visible_job
from jobqueue.api.responses import ERRORS
from jobqueue.api.transfer import ResultUrl, UploadRequest, UploadTicket
from jobqueue.auth.identity import Identity
from jobqueue.auth.policy import Action
from jobqueue.errors import ConfigError
from jobqueue.logs import get_logger
from jobqueue.models import JobStatus
from jobqueue.staged_input import StagedInput, open_staged_input
from jobqueue.storage import is_local
from jobqueue.upload_store import StagedUpload, UploadStore, delete_upload_folder, is_ref

log = get_logger("jobqueue.api.uploads")
uploads = APIRouter(prefix="/v1/uploads", tags=["uploads"], responses={
    **ERRORS, 413: {"model": ERRORS[422]["model"], "description": "The size is over JOBQUEUE_API_MAX_UPLOAD_BYTES."}})
results = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)


def upload_store(svc: Services) -> UploadStore:
    s = svc.settings
    return UploadStore(svc.client.redis, svc.client.keys, s.staging, s.environment, s.api_upload_ttl_seconds,
                       s.quota_max_pending_uploads_per_owner)


def _not_s3(what: str, instead: str) -> ApiError:
    return ApiError(409, f"{what} need the service's storage on S3 (JOBQUEUE_STAGING_URI and JOBQUEUE_RESULTS_URI "
                    f"`s3://...`); this service stores on its local disk: {instead}", reason="storage_not_s3")


def _presign_failed(e: Exception) -> ApiError:
    return ApiError(503, f"the service cannot presign S3 URLs: {e}", reason="unavailable")


@uploads.post("", response_model=UploadTicket, status_code=201, summary="Stage an input with a presigned PUT.")
async def create_upload(body: UploadRequest, identity: Caller, svc: Svc) -> UploadTicket:
    """A reference to submit with (`POST /v1/jobs?upload=<ref>`) and a short-lived URL that PUTs exactly `size`
    bytes to the object store, under the caller's own staging prefix. With local storage: 409, post the input as
    the body of `POST /v1/jobs` instead."""
    allow(identity, Action.SUBMIT_JOB, svc)
    s = svc.settings
    if is_local(s.staging) or not s.staging.startswith("s3://"):
        raise _not_s3("uploads", "post the input as the body of POST /v1/jobs instead")
    if body.size > s.api_max_upload_bytes:
        raise ApiError(413, f"size {body.size} is over JOBQUEUE_API_MAX_UPLOAD_BYTES={s.api_max_upload_bytes} "
                       "bytes; split the input into several queries, or raise the setting", field="size",
                       reason="upload_too_large")
    staged = await upload_store(svc).create(identity.owner, identity.team, body.size, body.content_type)
    left = int((staged.expires_at - datetime.now(UTC)).total_seconds())
    seconds = max(1, min(s.api_presign_seconds, left))  # a URL never outlives its reference (but by the signing)
    try:
        put = await asyncio.to_thread(svc.presigner.put_url, staged.uri, size=body.size,
                                      content_type=body.content_type, seconds=seconds)
    except (ConfigError, OSError, ValueError) as e:
        raise _presign_failed(e) from None
    audit(identity, Action.SUBMIT_JOB, upload=staged.ref, size=body.size, step="upload")
    return UploadTicket(upload=staged.ref, url=put.url, headers={"Content-Type": body.content_type,
                        "Content-Length": str(body.size)}, url_expires_at=put.expires_at,
                        expires_at=staged.expires_at, max_bytes=int(s.api_max_upload_bytes))


@asynccontextmanager
async def using_upload(svc: Services, identity: Identity, ref: str) -> AsyncIterator[StagedUpload]:
    """The caller's upload `ref`, claimed for one submit: given back when the block fails (it can be submitted
    again until it expires), its object removed when the block succeeds (the job has its own staged copy)."""
    if not is_ref(ref):
        raise ApiError(422, f"upload: {ref!r} is not an upload reference (`up_` and 32 hex digits, from POST "
                       "/v1/uploads)", field="upload", reason="invalid")
    store = upload_store(svc)
    staged = await store.take(ref, identity.owner)
    if staged is None:
        raise ApiError(404, f"no upload {ref!r} of {identity.owner}: it is unknown, expired (references last "
                       f"JOBQUEUE_API_UPLOAD_TTL_SECONDS={svc.settings.api_upload_ttl_seconds} s), submitted already, "
                       "or another owner's", field="upload", reason="upload_not_found")
    try:
        yield staged
    except BaseException:
        await asyncio.shield(store.give_back(staged))
        raise
    folder = staged.uri.rsplit("/", 1)[0]
    try:
        await asyncio.to_thread(delete_upload_folder, svc.client.storage, folder)
    except OSError as e:  # the garbage collector removes it later
        log.warning("could not remove a submitted upload", upload=staged.ref, error=str(e))


def open_staged(svc: Services, staged: StagedUpload, times_column: str | None) -> StagedInput:
    """The staged object as a query input (`jobqueue.staged_input`: its footer or one scan, never the whole table
    in memory), refused as a body would be: 422 (`upload`) when nothing was PUT, 413 past the limit, 422 (`input`)
    when it does not decode."""
    fs, key = svc.client.storage.resolve(staged.uri)
    info = fs.get_file_info(key)
    if info.type != pafs.FileType.File:
        raise ApiError(422, f"upload: nothing was PUT to upload {staged.ref}'s URL yet; PUT the input there "
                       "first", field="upload", reason="invalid")
    limit = svc.settings.api_max_upload_bytes
    if info.size is None or info.size > limit:
        raise ApiError(413, f"the staged upload is {info.size} bytes, over JOBQUEUE_API_MAX_UPLOAD_BYTES={limit} "
                       "bytes; split the input into several queries, or raise the setting", field="upload",
                       reason="upload_too_large")
    return open_staged_input(svc.client.storage, staged.uri, staged.content_type, times_column)


@results.get("/{job_id}/result-url", response_model=ResultUrl,
             summary="A short-lived presigned URL of a succeeded job's result (S3 storage).")
async def get_result_url(job_id: str, identity: Caller, svc: Svc) -> ResultUrl:
    """Whoever may download the result (`GET /v1/jobs/{id}/result`) may get its URL; the URL works for
    JOBQUEUE_API_PRESIGN_SECONDS and needs no token. With local storage: 409, download the result instead."""
    record = await visible_job(identity, job_id, Action.READ_RESULT, svc)
    if record.status is not JobStatus.SUCCEEDED or not record.result_uri:
        raise ApiError(409, f"job {record.job_id} is {record.status.value}; only a succeeded job has a result",
                       reason="job_state")
    uri = record.result_uri
    if not uri.startswith("s3://"):
        raise _not_s3("presigned result URLs", f"download GET /v1/jobs/{record.job_id}/result instead")
    fs, key = svc.client.storage.resolve(uri)
    info = await asyncio.to_thread(fs.get_file_info, key)
    if info.type != pafs.FileType.File:
        raise ApiError(410, f"the result of job {record.job_id} is gone: results are kept for "
                       f"JOBQUEUE_RESULT_TTL_SECONDS ({svc.settings.result_ttl} s) after their job finished",
                       reason="result_gone")
    try:
        got = await asyncio.to_thread(svc.presigner.get_url, uri, seconds=svc.settings.api_presign_seconds,
                                      filename=f"{record.job_id}.parquet")
    except (ConfigError, OSError, ValueError) as e:
        raise _presign_failed(e) from None
    return ResultUrl(job_id=record.job_id, url=got.url, expires_at=got.expires_at, size=info.size)
