"""Malformed payloads written straight into a queue are rejected and logged; the worker keeps serving."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import time

import pytest
import structlog

from consumer.worker import build_worker
from jobqueue import AsyncJobQueueClient, JobFailedError, JobStatus
from jobqueue.models import JobRecord
from tests.helpers import eventually, stop_worker, worker_running


class Boom:
    """Unpickling this runs code: the payload a Redis writer could plant if pickle were accepted."""


def envelope(kwargs) -> bytes:
    return json.dumps({"t": 1, "f": "run_offline_query", "a": [], "k": kwargs, "et": int(time.time() * 1000)}).encode()


async def inject(client: AsyncJobQueueClient, job_id: str, raw: bytes, with_record: bool = False) -> None:
    if with_record:
        from datetime import UTC, datetime

        await client.store.create(JobRecord(
            job_id=job_id, status=JobStatus.QUEUED, resource_group="default", output=["user.f0"], input_rows=1,
            submitted_at=datetime.now(UTC),
        ))
    await client.redis.set(client.keys.arq_job(job_id), raw)
    await client.redis.zadd(client.keys.queue("default"), {client.keys.arq_id(job_id): int(time.time() * 1000)})


async def test_bad_payloads_do_not_stop_the_worker(settings, store, caplog, tmp_path):
    marker = tmp_path / "pwned"
    Boom.__reduce__ = lambda self: (exec, (f"open({str(marker)!r}, 'w').write('x')",))
    bad = {
        "pickled": (pickle.dumps({"t": 1, "f": "run_offline_query", "a": [], "k": {"x": Boom()}, "et": 1}), False),
        "not-json": (b"\x00\x01garbage", False),
        "wrong-shape": (b'{"hello": "world"}', False),
        "unknown-function": (json.dumps({"t": 1, "f": "os.system", "a": [], "k": {}, "et": 1}).encode(), False),
        "wrong-types": (envelope({"job": {"job_id": 5, "output": "user.f0"}}), True),
        "unknown-fields": (envelope({"job": {"evil": True}}), True),
    }
    async with AsyncJobQueueClient(settings) as client:
        for job_id, (raw, with_record) in bad.items():
            await inject(client, job_id, raw, with_record)
        good = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])

        worker = build_worker(settings, "default", max_jobs=2)
        caplog.set_level(logging.INFO)
        with structlog.testing.capture_logs() as events:
            task = asyncio.create_task(worker.async_run())
            try:
                record = await good.wait(timeout=30, show_progress=False)

                async def drained():
                    return await client.redis.zcard(client.keys.queue("default")) == 0

                await eventually(drained, what="queue drained")
            finally:
                await stop_worker(worker, task)
        assert record.status is JobStatus.SUCCEEDED
        assert not marker.exists(), "a pickle payload must never be executed"
        for job_id in ("wrong-types", "unknown-fields"):
            rec = await client.get_job(job_id)
            assert rec.status is JobStatus.FAILED and rec.error.startswith("malformed job payload")
        rejected = [e for e in events if e["event"] == "job payload rejected"]
        assert len(rejected) == 2 and all(e["reason"].startswith("malformed job payload") for e in rejected)
        entries = [e for e in events if e["event"] == "queue entry rejected"]
        envelopes = ("pickled", "not-json", "wrong-shape", "unknown-function")
        assert sorted(e["job_id"] for e in entries) == sorted(envelopes), "rejected by us, each logged once"
        arq_lines = [r.getMessage() for r in caplog.records if r.name == "arq.worker"]
        assert not [m for m in arq_lines if any(client.keys.arq_id(j) in m for j in envelopes)], "arq never saw them"


async def test_a_failing_query_is_recorded_and_the_worker_serves_the_next(settings):
    async with AsyncJobQueueClient(settings) as client:
        bad = await client.offline_query({"user.id": ["not-a-number"]}, ["user.f0"])  # type clash in the join
        good = await client.offline_query({"user.id": [1]}, ["user.f0"])
        async with worker_running(settings):
            with pytest.raises(JobFailedError) as info:
                await bad.wait(timeout=30, show_progress=False)
            failed = info.value.record
            record = await good.wait(timeout=30, show_progress=False)
        assert failed.status is JobStatus.FAILED and "is BIGINT but the input's 'user.id' is VARCHAR" in failed.error
        assert record.status is JobStatus.SUCCEEDED


async def test_naive_times_given_to_the_sdk_are_utc_and_the_job_runs(settings):
    """The consumer refuses naive datetimes in a payload; the SDK turns naive input into UTC before that."""
    from datetime import datetime, timedelta

    naive_now = datetime.utcnow()  # noqa: DTZ003 - naive on purpose
    async with AsyncJobQueueClient(settings) as client:
        job = await client.offline_query({"user.id": [1, 2]}, ["user.f0"], [naive_now, naive_now],
                                         completion_deadline=naive_now + timedelta(minutes=5))
        async with worker_running(settings):
            record = await job.wait(timeout=30, show_progress=False)
    assert record.status is JobStatus.SUCCEEDED and record.completion_deadline.tzinfo is not None
