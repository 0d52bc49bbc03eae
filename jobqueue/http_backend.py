"""`HttpBackend`: the SDK's surface over the HTTP API (`jobqueue api`), with a bearer token and nothing else: no
Redis, no storage credentials, no registry file (`JobQueueBackend`). Answers other than success become the
SDK's own errors, with the API's texts (which are the direct mode's):

    401 AuthenticationError (`.reason`)   403 PermissionDeniedError   404 JobNotFoundError (or the registry's)
    409 AmbiguousJobIdError / JobStateError   410 ResultGoneError   413, 422 InvalidQueryError (`.field`)
    429 QuotaExceededError (its numbers)    503 and no answer at all: ApiUnavailableError (wait() waits it out)
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import quote

import httpx
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc as ipc
from pydantic import SecretStr

from jobqueue.api.wire import (
    CancelFilter,
    CancelManyResult,
    GroupStatus,
    JobPage,
    RegistryApplied,
    RegistryHistory,
    RegistryVersionBody,
    ScheduleAction,
    ScheduleList,
    ScheduleRuns,
)
from jobqueue.api_transport import api_client
from jobqueue.backend import QueryRequest
from jobqueue.errors import (
    AmbiguousJobIdError,
    ApiUnavailableError,
    AuthenticationError,
    InvalidQueryError,
    JobNotFoundError,
    JobQueueError,
    JobStateError,
    PermissionDeniedError,
    QuotaExceededError,
    RegistryVersionNotFound,
    ResultGoneError,
)
from jobqueue.inputs import as_of_times, to_arrow
from jobqueue.job_filter import JobFilter
from jobqueue.models import JobRecord
from jobqueue.registry import Registry
from jobqueue.registry_versions import document_of
from jobqueue.result_download import TAIL_BYTES, ResultSink, RowGroupAssembler, content_range
from jobqueue.result_files import ResultDownloads
from jobqueue.sizes import INLINE_INPUT_BYTES
from jobqueue.uploads import PresignedTransfers

ARROW_STREAM_TYPE = "application/vnd.apache.arrow.stream"
TIMES_COLUMN = "__input_time__"  # the input times travel as a column of the input, taken out by the API
PAGE = 1000
RANGED_MAX_BYTES = 2 << 30  # a result up to this size is downloaded in memory, decoding while it arrives
_CANDIDATES = re.compile(r"matches \d+ jobs: (.*?)(?: and \d+ more)?; give more characters")


FINISHED_KEPT = 256  # final records from long polls, each handed to the next `get_job` of its job
LONG_POLL_MAX_SECONDS = 60.0  # the API holds `GET /v1/jobs/{id}?wait=` at most this long


class LongPollWatch:
    """`FinishWatcher` over HTTP: each `wait` is one long poll; no connection is held in between."""

    def __init__(self, backend: HttpBackend, job_id: str) -> None:
        self._backend = backend
        self._job_id = job_id

    @property
    def subscribed(self) -> bool:
        return True

    async def subscribe(self) -> bool:
        return True

    async def wait(self, timeout: float) -> bool:
        return await self._backend.wait_final(self._job_id, timeout)

    async def close(self) -> None:
        return None


class HttpBackend:
    def __init__(self, url: str, token: SecretStr | None, *, local: bool = False, timeout: float = 60.0,
                 upload_threshold: int = 64 << 20) -> None:
        self.url = url
        self.local = local
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}
        self._http = api_client(url, headers, httpx.Timeout(timeout, connect=10.0))
        self._base = str(self._http.base_url).rstrip("/")  # with its path, if any: `_url`
        # big inputs PUT and results read straight from the service's object store (jobqueue.uploads)
        self.presigned = PresignedTransfers(self._http, upload_threshold, self._refusal)
        self._finished: dict[str, JobRecord] = {}  # final records from long polls: see `wait_final`
        self.downloads = ResultDownloads()  # `to_dataset()`'s files (`jobqueue.result_files`)

    def __repr__(self) -> str:
        return f"<HttpBackend {self.url}>"

    @property
    def server(self) -> str:
        return f"the jobqueue API at {self.url}"

    @property
    def on_embedded_server(self) -> bool:
        return False  # an API that does not answer may come back; its jobs live in its Redis, not in it

    async def _call(self, method: str, path: str, *, not_found: type[JobQueueError] = JobNotFoundError,
                    **kw: Any) -> httpx.Response:
        params = kw.pop("params", None)
        try:
            response = await self._http.request(method, self._url(path, params), **kw)
        except httpx.TransportError as e:
            raise ApiUnavailableError(f"cannot reach the jobqueue API at {self.url} ({type(e).__name__}: {e}); "
                                      "check JOBQUEUE_API_URL, or that `jobqueue up` runs") from e
        if response.is_success:
            return response
        _raise(response, self.url, not_found)

    def _url(self, path: str, params: Mapping[str, float | str | None] | Sequence[tuple[str, str]] | None
             ) -> httpx.URL:
        """`path` under the API's URL with `params` encoded by httpx (`QueryParams`), parsed once: given a relative
        path and params, httpx parses the URL three times (a tenth of a submission's client CPU)."""
        url = f"{self._base}/{path.lstrip('/')}"
        if params:
            url += f"?{httpx.QueryParams(params if isinstance(params, Mapping) else tuple(params))}"
        return httpx.URL(url)

    async def submit(self, query: QueryRequest) -> str:
        if query.owner is not None or query.team is not None:
            which = "owner" if query.owner is not None else "team"
            raise InvalidQueryError(which, "is the API token's over HTTP: leave it out (an admin makes a token "
                                    "for another owner or team with `jobqueue tokens create`)")
        table = to_arrow(query.input)
        params: list[tuple[str, str]] = [("output", o) for o in query.output]
        params += [("resource_group", query.resource_group), ("max_retries", str(query.max_retries)),
                   ("include_input_time", "true" if query.include_input_time else "false"),
                   ("priority", query.priority.value)]
        if query.input_times is not None:
            times = as_of_times(query.input_times, table.num_rows, query.submitted_at)
            table = table.append_column(TIMES_COLUMN, times)
            params.append(("input_times_column", TIMES_COLUMN))
        if query.deadline is not None:
            params.append(("completion_deadline", query.deadline.isoformat()))
        params += [("tag", f"{k}={v}") for k, v in query.tags.items()]
        params += [(k, v) for k, v in (("query_name", query.query_name),
                                       ("correlation_id", query.correlation_id)) if v is not None]
        params += [(k, str(v)) for k, v in (("num_shards", query.num_shards),
                                            ("num_workers", query.num_workers)) if v is not None]
        # a small input encodes faster than a hop to a thread takes (and its wake-up is a latency of its own)
        body = _arrow_stream(table) if table.nbytes <= INLINE_INPUT_BYTES else await asyncio.to_thread(
            _arrow_stream, table)
        try:
            upload = await self.presigned.stage(body, ARROW_STREAM_TYPE)
        except httpx.TransportError as e:
            raise ApiUnavailableError(f"cannot reach the jobqueue API at {self.url} ({type(e).__name__}: {e})") from e
        if upload is not None:  # staged in the object store: submitted by reference, no body
            response = await self._call("POST", "/v1/jobs", params=[*params, ("upload", upload)])
        else:
            response = await self._call("POST", "/v1/jobs", params=params, content=body,
                                        headers={"Content-Type": ARROW_STREAM_TYPE})
        return JobRecord.model_validate_json(response.content).job_id

    def _refusal(self, response: httpx.Response) -> Exception:
        try:
            _raise(response, self.url, JobNotFoundError)
        except JobQueueError as e:
            return e

    async def resolve_job_id(self, job_id: str) -> str:
        return (await self.get_job(job_id)).job_id

    async def get_job(self, job_id: str) -> JobRecord:
        _check_id(job_id)
        final = self._finished.pop(job_id, None)  # a final record never changes: the long poll's, not a GET more
        if final is not None:
            return final
        return JobRecord.model_validate_json((await self._call("GET", f"/v1/jobs/{job_id}")).content)

    def finish_watcher(self, job_id: str) -> LongPollWatch:
        return LongPollWatch(self, job_id)

    async def wait_final(self, job_id: str, timeout: float) -> bool:
        """Whether the job is final, asking the API to hold its answer up to `timeout` seconds (a long poll: the
        API answers as soon as the job's finish is published)."""
        _check_id(job_id)
        seconds = min(max(timeout, 0.0), LONG_POLL_MAX_SECONDS)
        response = await self._call("GET", f"/v1/jobs/{job_id}", params={"wait": seconds}, timeout=seconds + 30)
        record = JobRecord.model_validate_json(response.content)
        if record.status.is_final:  # the next `get_job` of it (wait() reads it right after) takes this one
            self._finished[job_id] = record
            while len(self._finished) > FINISHED_KEPT:
                self._finished.pop(next(iter(self._finished)))
        return record.status.is_final

    async def cancel(self, job_id: str, wait: float | None) -> JobRecord:
        _check_id(job_id)
        seconds = min(max(wait or 0.0, 0.0), 60.0)  # the API waits at most a minute for a running job to stop
        response = await self._call("POST", f"/v1/jobs/{job_id}/cancel", params={"wait": seconds},
                                    timeout=seconds + 30)
        return JobRecord.model_validate_json(response.content)

    async def read_result(self, record: JobRecord) -> pa.Table:
        """The result: from its presigned URL when the service stores on S3 (`jobqueue.uploads`), into memory (or a
        temporary file past 64 MiB). Else from `GET /v1/jobs/{id}/result`: its footer first (`Range: bytes=-64KiB`),
        then the rest in one ranged stream whose row groups decode while it arrives (`RowGroupAssembler`); an answer
        without ranges is streamed whole and read after."""
        path = f"/v1/jobs/{record.job_id}/result"
        try:
            with ResultSink() as sink:
                if await self.presigned.read_result(record.job_id, sink.write):
                    return await asyncio.to_thread(sink.read_table)
            async with self._http.stream("GET", path, timeout=None,
                                         headers={"Range": f"bytes=-{TAIL_BYTES}"}) as response:
                tail_start, size = content_range(response)
                if size is None:  # no ranges: this is the whole file
                    return await self._read_whole(response)
                if size <= RANGED_MAX_BYTES:
                    download = RowGroupAssembler(size)
                    download.put_tail(tail_start, await response.aread())
            if size > RANGED_MAX_BYTES:
                async with self._http.stream("GET", path, timeout=None) as response:
                    return await self._read_whole(response)
            missing = download.missing
            if missing is not None:
                start, end = missing
                async with self._http.stream("GET", path, timeout=None,
                                             headers={"Range": f"bytes={start}-{end - 1}"}) as response:
                    if response.status_code != 206:
                        await response.aread()
                        _raise(response, self.url, JobNotFoundError)
                    async for chunk in response.aiter_raw():
                        download.put(start, chunk)
                        start += len(chunk)
            return await download.table()
        except httpx.TransportError as e:
            raise ApiUnavailableError(f"the download of job {record.job_id}'s result from {self.url} broke "
                                      f"({type(e).__name__}: {e}); read it again") from e

    def result_location(self, record: JobRecord) -> str:
        """The API's download of the result (`GET`, with the token)."""
        return str(self._url(f"/v1/jobs/{quote(record.job_id, safe='')}/result", None))

    async def result_files(self, records: Sequence[JobRecord]) -> tuple[pafs.FileSystem, list[str]]:
        """The results downloaded, streamed to disk, into a folder of this client (`jobqueue.result_files`)."""
        for record in records:
            _check_id(record.job_id)
        ids = [r.job_id for r in records]
        return pafs.LocalFileSystem(), await self.downloads.fetch(self._http, self.presigned, ids, self._refusal)

    async def _read_whole(self, response: httpx.Response) -> pa.Table:
        """A result answered whole: streamed into memory (or a temporary file past 64 MiB), then read."""
        if not response.is_success:
            await response.aread()
            _raise(response, self.url, JobNotFoundError)
        with ResultSink() as sink:
            async for chunk in response.aiter_raw():
                sink.write(chunk)
            return await asyncio.to_thread(sink.read_table)

    async def jobs(self, wanted: JobFilter, limit: int, submitted_after: datetime | None,
                   submitted_before: datetime | None) -> list[JobRecord]:
        base: list[tuple[str, str]] = [(k, str(v)) for k, v in (
            ("owner", wanted.owner), ("team", wanted.team), ("state", wanted.state.value if wanted.state else None),
            ("resource_group", wanted.group), ("query_name", wanted.query_name), ("parent", wanted.parent),
            ("include_shards", "true" if wanted.shards else None),
            ("submitted_after", submitted_after.isoformat() if submitted_after else None),
            ("submitted_before", submitted_before.isoformat() if submitted_before else None)) if v is not None]
        base += [("tag", f"{k}={v}") for k, v in wanted.tags.items()]
        found: list[JobRecord] = []
        cursor: str | None = None
        while len(found) < limit:
            params = [*base, ("limit", str(min(PAGE, limit - len(found))))]
            if cursor:
                params.append(("cursor", cursor))
            page = JobPage.model_validate_json((await self._call("GET", "/v1/jobs", params=params)).content)
            found += page.jobs
            cursor = page.next_cursor
            if cursor is None:
                break
        return found[:limit]

    async def cancel_many(self, wanted: CancelFilter) -> CancelManyResult:
        response = await self._call("POST", "/v1/jobs/cancel", json=wanted.model_dump(mode="json",
                                                                                      exclude_none=True))
        return CancelManyResult.model_validate_json(response.content)

    async def groups(self) -> list[GroupStatus]:
        return [GroupStatus.model_validate(g) for g in (await self._call("GET", "/v1/groups")).json()]

    async def schedules(self) -> ScheduleList:
        return ScheduleList.model_validate_json((await self._call("GET", "/v1/schedules")).content)

    async def schedule_action(self, name: str, action: str) -> ScheduleAction:
        if action not in ("run", "pause", "resume"):
            raise InvalidQueryError("action", f"must be one of run, pause, resume, got {action!r}")
        _check_id(name, "name")
        response = await self._call("POST", f"/v1/schedules/{name}/{action}", not_found=JobQueueError)
        return ScheduleAction.model_validate_json(response.content)

    async def schedule_runs(self, name: str, limit: int) -> ScheduleRuns:
        _check_id(name, "name")
        response = await self._call("GET", f"/v1/schedules/{name}/runs", params={"limit": limit},
                                    not_found=JobQueueError)
        return ScheduleRuns.model_validate_json(response.content)

    async def registry_current(self) -> RegistryVersionBody:
        response = await self._call("GET", "/v1/registry", not_found=RegistryVersionNotFound)
        return RegistryVersionBody.model_validate_json(response.content)

    async def registry_history(self) -> RegistryHistory:
        return RegistryHistory.model_validate_json((await self._call("GET", "/v1/registry/versions")).content)

    async def registry_version(self, ref: str) -> RegistryVersionBody:
        _check_id(ref, "version")
        response = await self._call("GET", f"/v1/registry/versions/{ref}", not_found=RegistryVersionNotFound)
        return RegistryVersionBody.model_validate_json(response.content)

    async def apply_registry(self, registry: Registry, applied_by: str | None) -> RegistryApplied:
        """The registry as parsed here (local paths made absolute against its file's directory), as JSON; the
        API records the token's owner as who applied it."""
        response = await self._call("POST", "/v1/registry", json=document_of(registry),
                                    params={"origin": registry.origin})
        return RegistryApplied.model_validate_json(response.content)

    async def aclose(self) -> None:
        self.downloads.close()
        await self.presigned.aclose()
        await self._http.aclose()


def _check_id(value: str, field: str = "job_id") -> None:
    """A path segment: never a `/` or a dot-segment, which would reach another route."""
    if not value or "/" in value or value in (".", "..") or "?" in value or "#" in value:
        raise InvalidQueryError(field, f"{value!r} is not a valid {field}")


def _arrow_stream(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _conflict(detail: str, field: object) -> JobQueueError:
    """409: a job id prefix that several jobs share (`field` job_id), else a job state that does not allow it."""
    m = _CANDIDATES.search(detail)
    prefix = re.search(r"prefix '([^']*)'", detail)
    if field == "job_id" and m and prefix:
        return AmbiguousJobIdError(prefix.group(1), m.group(1).split(", "))
    return JobStateError(detail)


def _raise(response: httpx.Response, url: str, not_found: type[JobQueueError]) -> NoReturn:
    """The SDK error of an API answer other than success."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    detail = str(body.get("detail") or response.text or response.reason_phrase)
    field, reason, status = body.get("field"), body.get("reason"), response.status_code
    if status == 401:
        raise AuthenticationError(f"the jobqueue API at {url} refused the token ({reason or 'unknown'}): {detail}",
                                  reason=str(reason or "unknown"))
    if status == 403:
        raise PermissionDeniedError(detail)
    if status == 404:
        raise not_found(detail)
    if status == 409:
        raise _conflict(detail, field)
    if status == 410:
        raise ResultGoneError(detail)
    if status == 413:
        raise InvalidQueryError("input", detail)
    if status == 422 and field:
        prefix_text = f"{field}: "
        raise InvalidQueryError(str(field), detail[len(prefix_text):] if detail.startswith(prefix_text) else detail)
    if status == 429:
        quota = body.get("quota")
        hit: dict[str, Any] = quota if isinstance(quota, dict) else {}
        raise QuotaExceededError(detail, quota=str(hit.get("quota", "")), subject=str(hit.get("subject", "")),
                                 limit=int(hit.get("limit", 0)), current=int(hit.get("current", 0)))
    if status in (502, 503, 504):
        raise ApiUnavailableError(f"the jobqueue API at {url} answered {status}: {detail}")
    raise JobQueueError(f"the jobqueue API at {url} answered {status}: {detail}")
