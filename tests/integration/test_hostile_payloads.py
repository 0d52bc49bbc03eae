"""A corpus of 100+ hostile or broken payloads written straight into a queue and into job keys.

Each is rejected and logged once; no consumer crashes; nothing is executed or read from outside the
job's own staging location; the valid jobs around them complete.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import random
import time
from datetime import UTC, datetime
from typing import Any

import structlog

from consumer.worker import build_worker
from jobqueue import AsyncJobQueueClient, JobStatus
from jobqueue.models import JobRecord
from jobqueue.storage import job_uri
from tests.helpers import eventually, stop_worker


def envelope(kwargs: Any) -> bytes:
    return json.dumps({"t": 1, "f": "run_offline_query", "a": [], "k": kwargs, "et": int(time.time() * 1000)}).encode()


def valid_job(settings, job_id: str) -> dict[str, Any]:
    return {"job_id": job_id, "environment": settings.environment, "resource_group": "default",
            "output": ["user.f0"],
            "input_uri": job_uri(settings.staging, settings.environment, job_id, "input.parquet"),
            "input_columns": ["user.id"], "input_rows": 1, "submitted_at": datetime.now(UTC).isoformat()}


class Exploit:
    """Unpickling this runs code: what a Redis writer could plant if pickle were ever accepted."""

    marker = ""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (exec, (f"open({Exploit.marker!r}, 'w').write('x')",))


def corpus(settings, victim: str, secret_file: str) -> dict[str, tuple[bytes, bool]]:
    """job id -> (raw payload, whether a job record exists for it). Over 100 entries."""
    bad: dict[str, tuple[bytes, bool]] = {}
    # not an arq envelope at all (no record: arq itself logs and drops them)
    raw_junk = [b"", b"\x00\x01", b"null", b"[]", b"42", b'"str"', b"{", b'{"t": 1', b"\xff\xfe", b"{}",
                b'{"f": "run_offline_query"}', b'{"t": 1, "f": 3, "a": [], "k": {}, "et": 1}',
                b'{"t": 1, "f": "x", "a": {}, "k": {}, "et": 1}', b'{"t": 1, "f": "x", "a": [], "k": [], "et": 1}',
                b'{"t": "1", "f": "x", "a": [], "k": {}, "et": "now"}', b"[" * 100_000 + b"]" * 100_000,
                b'{"t": 1, "f": "run_offline_query", "a": [], "k": {}, "et": 1, "extra": 1}',
                b"x" * (2 << 20)]
    for i, raw in enumerate(raw_junk):
        bad[f"junk-{i}"] = (raw, False)
    rng = random.Random(9)
    for i in range(12):  # random bytes, and JSON oddities
        bad[f"random-{i}"] = (rng.randbytes(rng.randint(1, 4096)), False)
    for i, raw in enumerate([b"NaN", b'{"t": NaN}', b"\xef\xbb\xbf{}", b'{"t": 1e400}', b'"\\ud800"']):
        bad[f"odd-json-{i}"] = (raw, False)
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):  # an exploit: unpickling it would create `marker`
        bad[f"pickle-{proto}"] = (pickle.dumps({"t": 1, "f": "run_offline_query", "a": [], "k": {"x": Exploit()},
                                                "et": 1}, protocol=proto), False)
    bad["unknown-function"] = (json.dumps({"t": 1, "f": "os.system", "a": ["id"], "k": {}, "et": 1}).encode(), False)
    # envelopes whose job is wrong: a record exists, so each is marked failed with the reason
    wrong_values: dict[str, list[Any]] = {
        "job_id": [5, None, "", "../../etc", "x" * 300, ["a"]],
        "environment": [None, 1, "other-env", "x" * 10_000],
        "resource_group": [None, 7, "other-group", ""],
        "output": [None, "user.f0", [], [1], [None], {"a": 1}, ["x" * 100_000] * 3],
        "input_uri": [None, "", 5, "/etc/passwd", secret_file, "../../../etc/shadow", "s3://elsewhere/x.parquet",
                      "file:///etc/passwd", "x" * 5000],
        "input_columns": [None, [], "user.id", [1, 2]],
        "input_rows": [None, 0, -1, "many", 1.5],
        "submitted_at": [None, "yesterday", 1e30, []],
        "max_retries": [-1, 101, "2", None],
        "completion_deadline": ["soon", [], {"at": 1}],
    }
    for field, values in wrong_values.items():
        for i, value in enumerate(values):
            job_id = f"bad-{field}-{i}".replace("_", "-")
            job = {**valid_job(settings, job_id), field: value}
            bad[job_id] = (envelope({"job": job}), True)
    for i, extra in enumerate([{"evil": True}, {"__class__": "x"}, {"input_uri_override": "/"}]):
        job_id = f"bad-extra-{i}"
        bad[job_id] = (envelope({"job": {**valid_job(settings, job_id), **extra}}), True)
    for i, kwargs in enumerate([{}, {"job": None}, {"job": []}, {"job": "str"}, {"other": {}}]):
        bad[f"bad-kwargs-{i}"] = (envelope(kwargs), True)
    # a payload naming another job (its record and staged input) under its own arq id
    bad["collides"] = (envelope({"job": valid_job(settings, victim)}), True)
    # a payload for another resource group, or another environment sharing this Redis
    bad["other-group"] = (envelope({"job": {**valid_job(settings, "other-group"), "resource_group": "big"}}), True)
    return bad


async def test_a_hostile_corpus_is_rejected_and_the_good_jobs_complete(settings, tmp_path, caplog):
    secret = tmp_path / "secret.parquet"
    secret.write_bytes(b"PAR1 not for you")
    Exploit.marker = str(tmp_path / "pwned")
    async with AsyncJobQueueClient(settings) as client:
        first = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])
        bad = corpus(settings, first.id, str(secret))
        assert len(bad) >= 100, len(bad)
        for job_id, (raw, with_record) in bad.items():
            if with_record:
                await client.store.create(JobRecord(
                    job_id=job_id, status=JobStatus.QUEUED, resource_group="default", output=["user.f0"],
                    input_rows=1, submitted_at=datetime.now(UTC)))
            await client.redis.set(client.keys.arq_job(job_id), raw)
            await client.redis.zadd(client.keys.queue("default"), {client.keys.arq_id(job_id): int(time.time() * 1000)})
        last = await client.offline_query({"user.id": [3]}, ["user.f0"])

        worker = build_worker(settings, "default", max_jobs=10)
        caplog.set_level(logging.CRITICAL, logger="arq.worker")  # arq logs each undecodable job once itself
        with structlog.testing.capture_logs() as events:
            task = asyncio.create_task(worker.async_run())
            try:
                records = [await job.wait(timeout=60, show_progress=False) for job in (first, last)]

                async def drained():
                    return await client.redis.zcard(client.keys.queue("default")) == 0

                await eventually(drained, timeout=60, what="every injected job taken off the queue")
            finally:
                await stop_worker(worker, task)
        assert [r.status for r in records] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
        assert not (tmp_path / "pwned").exists(), "no pickle was ever executed"
        assert records[0].summary.rows_out == 2, "the colliding payload did not touch the real job"
        with_records = [job_id for job_id, (_, has) in bad.items() if has]
        for job_id in with_records:  # refused as malformed; or, once well-formed, by the planner or for no input
            rec = await client.get_job(job_id)
            assert rec.status is JobStatus.FAILED and rec.attempts <= 1, (job_id, rec)
            reasons = ("malformed job payload", "InvalidQueryError", "FileNotFoundError: the staged input")
            assert rec.error.startswith(reasons), (job_id, rec.error)
        logged = [e for e in events if e["event"] in ("job payload rejected", "job failed")]
        assert len(logged) == len(with_records), "each rejected and logged exactly once"
        assert worker.jobs_complete + worker.jobs_failed >= len(bad)
