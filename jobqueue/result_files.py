"""A result's files on this machine, for the SDK's HTTP mode: `to_dataset()` over files it cannot reach in the
service's storage. Each file (one per shard of a sharded query) is downloaded streamed to disk, never whole in
memory: from its presigned URL when the service stores on S3 (`jobqueue.uploads`), else from
`GET /v1/jobs/{id}/result`.

    downloads = ResultDownloads()                                   # one per client
    paths = await downloads.fetch(http, presigned, job_ids, refusal)  # a new folder of its own
    downloads.close()                                               # the client's close removes every folder

The folders live under one temporary directory of the client (removed when the client closes, or at exit), not of
a handle: a dataset read from a handle that is gone still finds its files.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from jobqueue.errors import ApiUnavailableError
from jobqueue.uploads import PresignedTransfers

PARALLEL = 4  # files downloaded at once


class ResultDownloads:
    def __init__(self) -> None:
        self._root: tempfile.TemporaryDirectory[str] | None = None

    def _folder(self) -> Path:
        if self._root is None:
            self._root = tempfile.TemporaryDirectory(prefix="jobqueue-results-")
        return Path(tempfile.mkdtemp(dir=self._root.name))

    async def fetch(self, http: httpx.AsyncClient, presigned: PresignedTransfers, job_ids: Sequence[str],
                    refusal: Callable[[httpx.Response], Exception]) -> list[str]:
        """The local paths of these jobs' results, in order, downloaded into a new folder."""
        folder = self._folder()
        paths = [folder / f"{i:05d}.parquet" for i in range(len(job_ids))]
        gate = asyncio.Semaphore(PARALLEL)

        async def one(job_id: str, dest: Path) -> None:
            async with gate:
                await download_result(http, presigned, job_id, dest, refusal)

        try:
            await asyncio.gather(*(one(j, p) for j, p in zip(job_ids, paths, strict=True)))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return [str(p) for p in paths]

    def close(self) -> None:
        if self._root is not None:
            self._root.cleanup()
            self._root = None


async def download_result(http: httpx.AsyncClient, presigned: PresignedTransfers, job_id: str, dest: Path,
                          refusal: Callable[[httpx.Response], Exception]) -> None:
    """Job `job_id`'s result into the file `dest`, streamed: its presigned URL, else the API's download."""
    with open(dest, "wb") as out:
        def write(chunk: bytes) -> None:
            out.write(chunk)

        if await presigned.read_result(job_id, write):
            return
        out.seek(0)
        out.truncate()
        try:
            async with http.stream("GET", f"/v1/jobs/{job_id}/result", timeout=None) as response:
                if not response.is_success:
                    await response.aread()
                    raise refusal(response)
                async for chunk in response.aiter_raw():
                    out.write(chunk)
        except httpx.TransportError as e:
            raise ApiUnavailableError(f"the download of job {job_id}'s result broke ({type(e).__name__}: {e}); "
                                      "read it again") from e
