"""A sharded query's `to_dataset()` and `result_uris()` over HTTP, end to end against a served API and real consumers:
each shard's result is downloaded (streamed to disk; from its presigned URL when the service stores on S3) into a
folder of the client, the dataset equals the direct mode's, and the folder goes when the client closes."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as pads
import pytest

from jobqueue import AsyncJobQueueClient, JobQueueClient, JobStatus
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Role
from tests.api_support import http_settings, make_token
from tests.helpers import worker_running

OUTPUT = ["user.f0", "user.f1"]


@pytest.mark.parametrize("storage", ["local", "s3"])
async def test_a_sharded_querys_dataset_over_http_equals_the_direct_modes(settings, s3_settings, storage):
    served = s3_settings if storage == "s3" else settings
    token = await make_token(served, "alice", Role.USER, "risk")
    ids = list(range(1, 1201))
    with api_in_thread(served, port=0) as url:
        async with AsyncJobQueueClient(http_settings(served, url, token)) as remote:
            assert not remote.direct
            job = await remote.offline_query({"user.id": ids}, OUTPUT, num_shards=3)
            async with worker_running(served, max_jobs=3):
                assert (await job.wait(timeout=120, show_progress=False)).status is JobStatus.SUCCEEDED
            parent = await job.record()
            uris = await job.result_uris()
            assert uris == [f"{url}/v1/jobs/{shard}/result" for shard in parent.shard_ids]
            dataset = await job.to_dataset()
            assert isinstance(dataset, pads.Dataset) and dataset.count_rows() == len(ids)
            files = [Path(f) for f in dataset.files]
            assert len(files) == 3 and all(f.is_file() for f in files)
            assert await job.to_dataset() is not dataset and (await job.to_dataset()).files == dataset.files  # once
            got = dataset.to_table().sort_by("__row__")
            assert got.column("user.id").to_pylist() == ids
            assert got.drop_columns(["__row__"]).to_pandas().equals((await job.to_arrow()).to_pandas())
        assert not any(f.exists() for f in files)  # the client's close removed its downloads
        async with AsyncJobQueueClient(served) as direct:
            expected = (await direct.job(job.id).to_dataset()).to_table().sort_by("__row__")
        assert got.equals(expected)
        with JobQueueClient(http_settings(served, url, token)) as blocking:  # the blocking twin, one shard's id
            one = blocking.job(parent.shard_ids[0])
            assert one.result_uris() == [f"{url}/v1/jobs/{parent.shard_ids[0]}/result"]
            assert one.to_dataset().count_rows() == (await direct_rows(served, parent.shard_ids[0]))


async def direct_rows(settings, job_id: str) -> int:
    async with AsyncJobQueueClient(settings) as direct:
        return (await direct.job(job_id).to_arrow()).num_rows
