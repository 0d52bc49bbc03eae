"""Sharded queries (issue 17 part 1) through real consumers: a sharded query answers row for row what the unsharded
one does, in input order; the parent's state and summary come from its shards."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from jobqueue import AsyncJobQueueClient, JobStatus
from jobqueue.errors import InvalidQueryError, JobCancelledError, JobFailedError
from jobqueue.handles import AsyncJobHandle
from jobqueue.models import JobRecord
from jobqueue.sample import sample_input
from manager.reaper import Reaper
from tests.helpers import worker_running
from tests.reference import assert_same, reference

OUTPUT = ["user.f0", "user.logins", "user.segment", "user.txn_count_7d"]


def _with_duplicates_and_nulls(ids: pa.Array, times: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The input again with its first 20 rows repeated at the end (duplicate rows) and every 17th key null."""
    values = ids.to_pylist() + ids.to_pylist()[:20]
    keys = pa.array([None if i % 17 == 5 else v for i, v in enumerate(values)], type=pa.int64())
    return keys, pa.concat_arrays([times, times.slice(0, 20)])


@pytest.mark.parametrize("n", [1, 3, 16])
async def test_a_sharded_query_equals_the_unsharded_one_row_for_row(settings, store, n):
    ids, times = sample_input(store.users, 400, seed=n)
    keys, times = _with_duplicates_and_nulls(ids["user.id"], times)
    async with AsyncJobQueueClient(settings) as client, worker_running(settings, max_jobs=4):
        whole = await client.offline_query({"user.id": keys}, OUTPUT, times)
        sharded = await client.offline_query({"user.id": keys}, OUTPUT, times, num_shards=n)
        for job in (whole, sharded):
            assert (await job.wait(timeout=120, show_progress=False)).status is JobStatus.SUCCEEDED
        parent = await sharded.record()
        assert len(parent.shard_ids) == n and parent.shards_done == n and parent.rows_done == len(keys)
        expected = await whole.to_pandas()
        got = await sharded.to_pandas()
        pd.testing.assert_frame_equal(got, expected)
        assert "__row__" not in got.columns
        known = [k is not None for k in keys.to_pylist()]
        assert_same(got[known].reset_index(drop=True), reference(
            store, keys.filter(pa.array(known)), times.filter(pa.array(known)), OUTPUT))
        uris = await sharded.result_uris()
        assert len(uris) == n
        dataset = await sharded.to_dataset()
        assert isinstance(dataset, pads.Dataset) and dataset.count_rows() == len(keys)
        assert sorted(dataset.to_table(columns=["__row__"]).column(0).to_pylist()) == list(range(len(keys)))
        summary = parent.summary
        assert summary is not None and summary.rows_in == len(keys) and summary.rows_out == len(keys)
        shards = [await client.get_job(s) for s in parent.shard_ids]
        assert all(s.parent_id == parent.job_id and s.attempts == 1 for s in shards)
        assert summary.total_seconds == max(s.summary.total_seconds for s in shards if s.summary)
        assert summary.sources["__shards__"]["shards"] == n


async def test_bad_shard_options_are_refused_naming_the_field(settings, store):
    async with AsyncJobQueueClient(settings) as client:
        for bad, field in [(dict(num_shards=0), "num_shards"), (dict(num_shards="many"), "num_shards"),
                           (dict(num_shards=True), "num_shards"), (dict(num_shards=2, num_workers=0), "num_workers"),
                           (dict(num_workers=2), "num_workers"),
                           (dict(num_shards=2, run_asynchronously=False), "num_shards")]:
            with pytest.raises(InvalidQueryError) as e:
                await client.offline_query({"user.id": [1, 2]}, ["user.f0"], **bad)
            assert e.value.field == field, bad


async def test_auto_picks_the_number_of_shards_from_the_target_rows(settings, store):
    settings = settings.model_copy(update={"shard_target_rows": 100})
    ids = pa.array(np.arange(1, 351), type=pa.int64())
    async with AsyncJobQueueClient(settings) as client, worker_running(settings, max_jobs=4):
        job = await client.offline_query({"user.id": ids}, ["user.f0"], num_shards="auto")
        assert len((await job.record()).shard_ids) == 4  # ceil(350 / 100)
        await job.wait(timeout=120, show_progress=False)
        assert (await job.to_arrow()).column("user.id").to_pylist() == ids.to_pylist()


async def test_over_http_a_sharded_query_reads_back_in_input_order(settings, store):
    from jobqueue.api.server import api_in_thread
    from jobqueue.auth.identity import Role
    from jobqueue.settings import Settings
    from tests.api_support import make_token

    ids, times = sample_input(store.users, 300, seed=21)
    token = await make_token(settings, "alice", Role.USER, "risk")
    with api_in_thread(settings, port=0) as url:
        remote_settings = Settings(api_url=url, api_token=token, environment=settings.environment,
                                   home=settings.home.parent / "client-home")
        async with AsyncJobQueueClient(remote_settings) as remote, worker_running(settings, max_jobs=4):
            assert not remote.direct
            job = await remote.offline_query(ids, OUTPUT, times, num_shards=4, num_workers=2)
            record = await job.wait(timeout=120, show_progress=False)
            assert record.status is JobStatus.SUCCEEDED and len(record.shard_ids) == 4 and record.num_workers == 2
            assert record.owner == "alice" and record.rows_done == 300
            assert_same(await job.to_pandas(), reference(store, ids["user.id"], times, OUTPUT))
            import httpx

            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
                parent = await http.get(f"/v1/jobs/{job.id}/result")
                assert parent.status_code == 409 and "one Parquet file per shard" in parent.text
                shard = await http.get(f"/v1/jobs/{record.shard_ids[0]}/result")
                assert shard.status_code == 200
            with pytest.raises(InvalidQueryError) as bad:
                await remote.offline_query(ids, OUTPUT, times, num_shards=2, num_workers=0)
            assert bad.value.field == "num_workers"


async def test_wait_shows_shards_and_rows_done(settings, store, capfd):
    ids = pa.array(np.arange(1, 301), type=pa.int64())
    async with AsyncJobQueueClient(settings) as client, worker_running(settings, max_jobs=3):
        job = await client.offline_query({"user.id": ids}, ["user.f0"], num_shards=3)
        await job.wait(timeout=120, show_progress=True)
    assert "succeeded · shards 3/3 · rows 300/300" in capfd.readouterr().out  # rich writes to stdout


@pytest.mark.parametrize("n", [3, 16])
async def test_the_adversarial_point_in_time_cases_hold_sharded(settings, tmp_path, n):
    """Input times equal to a source row's (it counts), a null in the latest row (null, not the older value),
    input times before any data, unknown keys, and duplicate input rows: each answered alike sharded."""
    import pyarrow.parquet as pq

    day = [datetime(2024, 1, d, tzinfo=UTC) for d in range(1, 6)]
    (tmp_path / "snap").mkdir()
    pq.write_table(pa.table({
        "user_id": pa.array([1, 1, 2, 3, 3], type=pa.int64()),
        "ts": pa.array([day[1], day[2], day[3], day[1], day[2]], type=pa.timestamp("us")),
        "v": pa.array([1.0, None, 2.0, 3.0, 4.0]),
    }), tmp_path / "snap" / "part-0.parquet")
    (tmp_path / "registry.yaml").write_text(
        "namespaces:\n  user:\n    primary_key: id\n    sources:\n    - name: snap\n      kind: parquet\n"
        "      path: snap\n      key: user_id\n      timestamp: ts\n      features: [v]\n")
    settings = settings.model_copy(update={"registry_path": tmp_path / "registry.yaml"})
    rows = [(1, day[1], 1.0), (1, day[2], None), (1, day[4], None), (2, day[0], None), (2, day[3], 2.0),
            (99, day[4], None), (3, day[1], 3.0), (3, day[4], 4.0), (3, day[1], 3.0), (None, day[4], None)] * 3
    keys = pa.array([r[0] for r in rows], type=pa.int64())
    times = pa.array([r[1] for r in rows], type=pa.timestamp("us", tz="UTC"))
    async with AsyncJobQueueClient(settings) as client, worker_running(settings, max_jobs=4):
        whole = await client.offline_query({"user.id": keys}, ["user.v"], times)
        sharded = await client.offline_query({"user.id": keys}, ["user.v"], times, num_shards=n)
        for job in (whole, sharded):
            await job.wait(timeout=120, show_progress=False)
        got = await sharded.to_arrow()
        assert got.equals(await whole.to_arrow())
        assert got.column("user.v").to_pylist() == [r[2] for r in rows]
        assert len((await sharded.record()).shard_ids) <= n  # shards that got no rows are not created


async def test_the_api_refuses_bad_shard_options_with_422_naming_the_field(settings):
    import httpx

    from jobqueue.api.server import api_in_thread
    from jobqueue.auth.identity import Role
    from tests.api_support import make_token

    token = await make_token(settings, "alice", Role.USER, "risk")
    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            for params in ({"num_shards": "²"}, {"num_shards": "0"}, {"num_shards": "many"},
                           {"num_shards": "2", "num_workers": "0"}, {"num_workers": "2"}):
                reply = await http.post("/v1/jobs", params={"output": "user.f0", **params}, content=b"")
                assert reply.status_code == 422, (params, reply.text)
                assert next(iter(params)) in reply.text or "num_workers" in reply.text


async def test_cancelling_one_queued_shard_or_many_jobs_cancels_whole_sharded_queries(settings):
    from jobqueue.keys import ActiveJobsField

    ids = {"user.id": pa.array(np.arange(1, 201), type=pa.int64())}
    async with AsyncJobQueueClient(settings) as client:  # no consumer: everything stays queued (3 of 4 held)
        job = await client.offline_query(ids, ["user.f0"], num_shards=4, num_workers=1, owner="ann")
        shards = (await job.record()).shard_ids
        await client.cancel(shards[0])  # the query cannot succeed without it: no sibling is left held forever
        assert [(await client.get_job(s)).status for s in shards] == [JobStatus.CANCELLED] * 4
        assert (await job.record()).status is JobStatus.CANCELLED

        other = await client.offline_query(ids, ["user.f0"], owner="ann", query_name="other")
        big = await client.offline_query(ids, ["user.f0"], num_shards=3, owner="ann", query_name="big")
        done = await client.cancel_many(query_name="big")
        big_shards = (await big.record()).shard_ids
        assert set(done.job_ids) <= {big.id, *big_shards} and done.job_ids  # the shards, or the parent for them
        assert [(await client.get_job(s)).status for s in big_shards] == [JobStatus.CANCELLED] * 3
        assert (await big.record()).status is JobStatus.CANCELLED
        assert (await other.record()).status is JobStatus.QUEUED
        field = ActiveJobsField.OWNER.field("ann")
        assert await client.redis.hget(client.keys.active_jobs, field) == b"1", "ann's one queued job still counts"


class ObservedHandle(AsyncJobHandle):
    """The SDK's handle, telling the test when it has read the record (so what the test does next comes after it)."""

    def __init__(self, job_id: str, client: AsyncJobQueueClient) -> None:
        super().__init__(job_id, client)
        self.read = asyncio.Event()

    async def record(self) -> JobRecord:
        record = await super().record()
        self.read.set()
        return record


async def waiting(client: AsyncJobQueueClient, job_id: str) -> asyncio.Task[JobRecord]:
    """`wait()` on the job, once it has read the record and waits for its finish event."""
    handle = ObservedHandle(job_id, client)
    waiter = asyncio.create_task(handle.wait(show_progress=False))
    await asyncio.wait_for(handle.read.wait(), 30)
    assert not waiter.done()
    return waiter


@pytest.mark.parametrize("how", ["parent", "shard"])
async def test_wait_returns_on_the_finish_event_when_queued_shards_are_cancelled(settings, how):
    """No consumer runs a shard, so no shard's end tells the parent's waiters: cancelling the queued shards does.
    The re-read (JOBQUEUE_WAIT_POLL_SECONDS) is an hour here: only the event can end the wait."""
    ids = {"user.id": pa.array(np.arange(1, 201), type=pa.int64())}
    slow = settings.model_copy(update={"wait_poll_seconds": 3600.0})
    async with AsyncJobQueueClient(slow) as client:
        job = await client.offline_query(ids, ["user.f0"], num_shards=3, num_workers=2)
        shards = (await job.record()).shard_ids
        waiter = await waiting(client, job.id)
        started = time.monotonic()
        await client.cancel(job.id if how == "parent" else shards[1], wait=0)
        with pytest.raises(JobCancelledError):
            await asyncio.wait_for(waiter, 30)
        assert time.monotonic() - started < 10, "the wait ended on the event, not on a re-read"


async def test_a_shard_expired_in_its_queue_ends_its_query_and_its_waiters_wait(settings):
    """The reaper expires queued shards past their completion deadline: the query has expired, its siblings are
    cancelled (as a consumer does for a shard that ended without a result), and the parent's waiter is told."""
    ids = {"user.id": pa.array(np.arange(1, 201), type=pa.int64())}
    slow = settings.model_copy(update={"wait_poll_seconds": 3600.0})
    async with AsyncJobQueueClient(slow) as client:
        job = await client.offline_query(ids, ["user.f0"], num_shards=3, num_workers=1,
                                         completion_deadline=timedelta(minutes=10))
        shards = (await job.record()).shard_ids
        await client.redis.zadd(client.keys.deadlines, {shards[0]: 0})  # only the first is past its deadline
        waiter = await waiting(client, job.id)
        reaper = Reaper(client.redis, client.keys, client.store, 60, client.storage)
        assert (await reaper.run({})).expired == (shards[0],)
        with pytest.raises(JobFailedError):
            await asyncio.wait_for(waiter, 30)
        assert [(await client.get_job(s)).status for s in shards] == [JobStatus.EXPIRED] + [JobStatus.CANCELLED] * 2
        assert (await job.record()).status is JobStatus.EXPIRED
