"""A corpus of 100+ hostile or broken queue entries written straight into Redis, run by a real manager
and real consumer processes (as the chaos test runs them).

Each is rejected and logged once with its job id; its record becomes `failed` with the reason (capped
at 4 KiB); its queue entry, arq keys and staged input are removed; no consumer exits; the manager keeps
ticking and healthy, and a group whose keys cannot be read fails alone; nothing is executed or read
from outside the job's own staging location; the valid jobs around them complete.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import random
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from jobqueue import AsyncJobQueueClient, JobStatus
from jobqueue.entries import MAX_TIME_MS
from jobqueue.inputs import to_arrow, with_times
from jobqueue.logs import MAX_ERROR_BYTES
from jobqueue.models import JobRecord
from jobqueue.storage import job_uri
from tests.helpers import eventually, free_port, running_manager, with_groups


def envelope(kwargs: Any, **fields: Any) -> bytes:
    data = {"t": 1, "f": "run_offline_query", "a": [], "k": kwargs, "et": int(time.time() * 1000), **fields}
    return json.dumps(data).encode()


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


def corpus(settings, victim: str, secret_file: str) -> dict[str, tuple[bytes | None, bool]]:
    """job id -> (raw payload, whether a job record exists for it). Over 100 entries."""
    bad: dict[str, tuple[bytes | None, bool]] = {}
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
        "max_retries": [-1, 101, "two", None],  # ("2" is read as 2: a valid job)
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
    # entries arq itself would refuse or crash on, each with a record
    for name, fields in {"et-huge": {"et": 10**20}, "et-negative": {"et": -1}, "et-past-9999": {"et": MAX_TIME_MS + 1},
                         "t-max": {"t": 10_000}, "t-huge": {"t": 10**30}, "t-negative": {"t": -5},
                         "extra-positional": {"a": [1]}, "unknown-function-record": {"f": "os.system"}}.items():
        bad[name] = (envelope({"job": valid_job(settings, name)}, **fields), True)
    bad["extra-keyword"] = (envelope({"job": valid_job(settings, "extra-keyword"), "x": 1}), True)
    bad["undecodable-record"] = (b"\xff\xfe\x00garbage", True)
    bad["deep-nesting-record"] = (b'{"t": 1, "k": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", True)
    bad["arq-job-missing"] = (None, True)
    # naive datetimes: refused at validation (they ran 3 times, then failed with a TypeError)
    for field in ("submitted_at", "completion_deadline", "input_time_min"):
        job_id = f"naive-{field}".replace("_", "-")
        bad[job_id] = (envelope({"job": {**valid_job(settings, job_id),
                                         field: datetime.now(UTC).replace(tzinfo=None).isoformat()}}), True)
    # oversized strings: a 500 KB feature name (well-formed: the planner refuses it), a 300 KB input column
    huge_feature = {**valid_job(settings, "huge-feature"), "output": ["user." + "f" * 500_000]}
    bad["huge-feature"] = (envelope({"job": huge_feature}), True)
    huge_column = {**valid_job(settings, "huge-column"), "input_columns": ["c" * 300_000]}
    bad["huge-column"] = (envelope({"job": huge_column}), True)
    return bad


# queue scores that are not a time: -inf and -1e20 are due now (a consumer takes and rejects them);
# +inf and 1e20 would never be due (the manager rejects them)
SCORES = {"score-minus-inf": float("-inf"), "score-minus-huge": -1e20, "score-inf": float("inf"),
          "score-huge": 1e20, "score-past-9999": MAX_TIME_MS + 1.0}


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def logged_events(home: Path) -> list[dict[str, Any]]:
    lines = [line for f in sorted((home / "logs").glob("*.log")) for line in f.read_text(errors="replace").splitlines()]
    too_long = [len(line) for line in lines if len(line) > 16 * MAX_ERROR_BYTES]
    assert not too_long, f"log lines of {too_long} bytes: error text is capped"
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.timeout(300)
async def test_a_hostile_corpus_is_rejected_and_the_good_jobs_complete(settings, tmp_path):
    port = free_port()
    settings = with_groups(settings, tmp_path, {"default": {"max_instances": 2}, "broken": {"max_instances": 1}},
                           manager_http_port=port, scale_to_zero_cooldown_seconds=30.0)
    secret = tmp_path / "secret.parquet"
    secret.write_bytes(b"PAR1 not for you")
    Exploit.marker = str(tmp_path / "pwned")
    staged_table = with_times(to_arrow({"user.id": [1]}), None, datetime.now(UTC))
    health: list[int] = []
    with structlog.testing.capture_logs() as manager_events:
        async with running_manager(settings) as backend, AsyncJobQueueClient(settings) as client:
            keys = client.keys
            first = await client.offline_query({"user.id": [1, 2]}, ["user.f0"])
            bad = corpus(settings, first.id, str(secret))
            assert len(bad) >= 100, len(bad)
            scores = dict.fromkeys(bad, time.time() * 1000)
            for job_id, score in SCORES.items():
                bad[job_id], scores[job_id] = (envelope({"job": valid_job(settings, job_id)}), True), score
            for job_id, (raw, with_record) in bad.items():
                if with_record:
                    await client.store.create(JobRecord(
                        job_id=job_id, status=JobStatus.QUEUED, resource_group="default", output=["user.f0"],
                        input_rows=1, submitted_at=datetime.now(UTC)))
                    client.storage.write_table(staged_table, job_uri(settings.staging, settings.environment, job_id,
                                                                     "input.parquet"))
                if raw is not None:
                    await client.redis.set(keys.arq_job(job_id), raw)
                await client.redis.zadd(keys.queue("default"), {keys.arq_id(job_id): scores[job_id]})
            # a member that is no job of this environment, and a group whose queue is not a sorted set
            await client.redis.zadd(keys.queue("default"), {"foreign-member": time.time() * 1000})
            await client.redis.set(keys.queue("broken"), "not a sorted set")
            # a record that cannot be read, past its deadline: the reaper skips it (logged once), not the tick
            await client.redis.hset(keys.job("unreadable-record"), mapping={"status": "queued", "output": "{"})
            await client.redis.zadd(keys.deadlines, {"unreadable-record": 1})
            tick_before = float(await client.redis.hget(keys.manager_state, "tick_at") or 0)
            middle = [await client.offline_query({"user.id": list(range(1, n + 2))}, ["user.f0"]) for n in range(3)]
            last = await client.offline_query({"user.id": [3]}, ["user.f0"])

            async def probe() -> None:
                while True:
                    health.append(await asyncio.to_thread(healthz, port))
                    await asyncio.sleep(0.5)

            prober = asyncio.create_task(probe())
            try:
                records = [await job.wait(timeout=120, show_progress=False) for job in (first, *middle, last)]

                async def drained():
                    return await client.redis.zcard(keys.queue("default")) == 0

                await eventually(drained, timeout=120, what="every injected entry taken off the queue")
                tick_after = float(await client.redis.hget(keys.manager_state, "tick_at") or 0)
                states = {g.decode(): json.loads(v) for g, v in (await client.redis.hgetall(keys.group_states)).items()}
                await eventually(lambda: len(health) >= 2, what="two health probes")
                staged = Path(settings.staging) / settings.environment
                await eventually(lambda: not any(staged.rglob("*.parquet")), what="every staged input removed")
            finally:
                prober.cancel()
            with_records = [job_id for job_id, (_, has) in bad.items() if has]
            failed = {job_id: await client.get_job(job_id) for job_id in with_records}
            leftovers = [k for job_id in bad for k in (keys.arq_job(job_id), keys.arq_in_progress(job_id),
                                                         keys.arq_retry(job_id)) if await client.redis.exists(k)]
            unexpected_exits = backend.unexpected_exits
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * len(records), [r.error for r in records]
    assert records[0].summary.rows_out == 2, "the colliding payload did not touch the real job"
    assert not (tmp_path / "pwned").exists(), "no pickle was ever executed"
    assert unexpected_exits == 0, "no consumer exited"
    assert health and set(health) == {200}, health
    assert tick_after > tick_before, "the manager kept ticking"
    assert states["broken"]["reason"] == "error" and "WRONGTYPE" in states["broken"]["error"], states["broken"]
    assert states["default"]["error"] is None, "one group's failure stays in that group"
    for job_id, rec in failed.items():
        assert rec.status is JobStatus.FAILED and rec.attempts <= 1 and rec.error, (job_id, rec)
        assert all(len(e.encode()) <= MAX_ERROR_BYTES for e in [rec.error, *rec.errors]), job_id
    assert "queue score -inf" in failed["score-minus-inf"].error and "never be due" in failed["score-inf"].error
    assert "et=100000000000000000000" in failed["et-huge"].error
    assert "timezone" in failed["naive-submitted-at"].error, failed["naive-submitted-at"].error
    assert "bytes cut" in failed["huge-feature"].error
    assert not leftovers, leftovers
    events = logged_events(settings.home) + [e for e in manager_events if e.get("event") == "queue entry rejected"]
    rejections = [e["job_id"] for e in events if e.get("event") in ("queue entry rejected", "job payload rejected",
                                                                    "job failed")]
    expected = sorted([*bad, "foreign-member"])
    assert sorted(rejections) == expected, "each bad entry rejected and logged exactly once, with its job id"
    skipped = [e["job_id"] for e in manager_events if e.get("event") == "job skipped by the reaper; the others go on"]
    assert skipped == ["unreadable-record"], skipped
