"""The SDK's presigned transfers over HTTP: big inputs are PUT straight to the object store, and results are read
straight from it, when the service stores on S3 (`jobqueue.api.uploads`).

- **Inputs.** An input whose Arrow stream is over JOBQUEUE_UPLOAD_THRESHOLD_BYTES is staged with `POST /v1/uploads`
  and a PUT to the presigned URL, then submitted as `?upload=<ref>`: the API process never holds it in a request
  body. A service with local storage answers 409 `storage_not_s3`; the SDK then posts the body, and remembers.
- **Results.** `read_result` asks `GET /v1/jobs/{id}/result-url` and reads the Parquet file from the object store:
  the bytes do not pass through the API process (one hop less, and the API's core is left to the other callers).
  With local storage (409), the SDK streams `GET /v1/jobs/{id}/result` as before, and remembers.

The object store's URL is the one the service is configured with (JOBQUEUE_S3_ENDPOINT_URL): a client outside the
cluster may not reach an in-cluster endpoint. A PUT or GET there that cannot connect, or is refused, falls back to
the API (the body, the streamed result) with a warning, and the SDK stops trying the store for this client. The
presigned requests go through a client of their own: the API token is never sent to the object store.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from jobqueue.api.transfer import ResultUrl, UploadTicket
from jobqueue.api_transport import verifying_tls
from jobqueue.errors import ApiUnavailableError
from jobqueue.logs import get_logger

log = get_logger("jobqueue.uploads")
Refusal = Callable[[httpx.Response], Exception]  # the SDK error of an API answer (`http_backend._raise`)


class PresignedTransfers:
    """What one HTTP client knows about the service's object store, and the transfers through it."""

    def __init__(self, api: httpx.AsyncClient, threshold: int, refusal: Refusal) -> None:
        self.api, self.threshold, self.refusal = api, threshold, refusal
        self.offered: bool | None = None  # None: not asked yet; False: local storage, or the store is unreachable
        self._client: httpx.AsyncClient | None = None  # made at the first transfer: most clients never make one

    @property
    def _store(self) -> httpx.AsyncClient:
        """The object store's client: no API token; TLS verified with the process's one context."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=10.0), verify=verifying_tls())
        return self._client

    def _give_up(self, why: str, **kw: object) -> None:
        self.offered = False
        log.warning(f"{why}; going through the API instead", **kw)

    async def stage(self, body: bytes, content_type: str) -> str | None:
        """The upload reference `body` was PUT under; None when it goes in the request body instead (small, or no
        S3 behind the service, or its object store is out of this client's reach)."""
        if len(body) <= self.threshold or self.offered is False:
            return None
        response = await self.api.post("/v1/uploads", json={"size": len(body), "content_type": content_type})
        if _not_s3(response):
            self.offered = False
            return None
        if not response.is_success:
            raise self.refusal(response)
        ticket = UploadTicket.model_validate_json(response.content)
        self.offered = True
        try:
            put = await self._store.put(ticket.url, content=body, headers=ticket.headers)
        except httpx.TransportError as e:
            self._give_up("cannot reach the object store to PUT the input", error=f"{type(e).__name__}: {e}")
            return None
        if not put.is_success:
            self._give_up("the object store refused the PUT of the input", status=put.status_code,
                          detail=put.text[:300])
            return None
        return ticket.upload

    async def read_result(self, job_id: str, sink: Callable[[bytes], None]) -> bool:
        """Whether the result of `job_id` was read into `sink` from its presigned URL; False: stream it from the
        API instead (local storage, or the store out of reach). API refusals (404, 409, 410) are raised."""
        if self.offered is False:
            return False
        response = await self.api.get(f"/v1/jobs/{job_id}/result-url")
        if _not_s3(response):
            self.offered = False
            return False
        if not response.is_success:
            raise self.refusal(response)
        self.offered = True
        url = ResultUrl.model_validate_json(response.content).url
        started = False
        try:
            async with self._store.stream("GET", url) as got:
                if not got.is_success:
                    await got.aread()
                    self._give_up("the object store refused the GET of the result", status=got.status_code,
                                  detail=got.text[:300])
                    return False
                async for chunk in got.aiter_raw():
                    started = True
                    sink(chunk)
        except httpx.TransportError as e:
            if started:  # part of it is in the sink already: the caller reads it again
                raise ApiUnavailableError(f"the download of job {job_id}'s result from the object store broke "
                                          f"({type(e).__name__}: {e}); read it again") from e
            self._give_up("cannot read the result from the object store", error=f"{type(e).__name__}: {e}")
            return False
        return True

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _not_s3(response: httpx.Response) -> bool:
    if response.status_code != 409:
        return False
    try:
        return bool(response.json().get("reason") == "storage_not_s3")
    except (ValueError, AttributeError):
        return False

