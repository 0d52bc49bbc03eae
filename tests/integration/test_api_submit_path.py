"""What makes an API submission cheap, and that it changes no behaviour: verified tokens are kept at most
JOBQUEUE_API_TOKEN_CACHE_SECONDS (a revoked token is refused within that bound, through the served API too); the
submit answer is the record as stored, though it is not read back; the submitted wake is published by the submit
script itself, once per created job (once per sharded query, once per scheduled run) and never for a refused
one."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pyarrow as pa
import pytest

from jobqueue import AsyncJobQueueClient
from jobqueue.api.server import api_in_thread
from jobqueue.auth.identity import Identity, Role
from jobqueue.auth.oidc import BearerAuthenticator, Refusal, RefusalReason
from jobqueue.auth.token_cache import VerifiedTokens
from jobqueue.auth.tokens import TokenStore
from jobqueue.client import PreparedSubmission
from jobqueue.direct_submit import prepare_input
from jobqueue.keys import Keys, submitted_event
from jobqueue.models import JobRecord, JobStatus
from jobqueue.redis import connect_redis
from jobqueue.submit_store import DuplicateJobId
from tests.api_support import ARROW, arrow_body, bearer, make_token

TIMES = [datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 9, tzinfo=UTC)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_verified_token_is_kept_for_its_seconds_and_a_revocation_holds_after_them(settings):
    redis = connect_redis(settings)
    try:
        store = TokenStore(redis, Keys.for_environment(settings.environment))
        token, info = await store.create("alice", Role.USER, "risk")
        clock = Clock()
        kept = VerifiedTokens(BearerAuthenticator(store), seconds=2.0, clock=clock)
        at_once = VerifiedTokens(BearerAuthenticator(store), seconds=0.0)
        alice = Identity("alice", "risk", Role.USER, token_id=info.token_id)
        assert await kept.verify(token) == alice == await at_once.verify(token)
        await store.revoke(info.token_id)
        clock.now += 1.9
        assert await kept.verify(token) == alice  # kept: no Redis read within the bound
        refused = await at_once.verify(token)
        assert isinstance(refused, Refusal) and refused.reason is RefusalReason.REVOKED
        clock.now += 0.1
        refused = await kept.verify(token)  # the bound: refused from `seconds` after it was verified
        assert isinstance(refused, Refusal) and refused.reason is RefusalReason.REVOKED
        assert isinstance(await kept.verify(token), Refusal)  # a refusal is never kept
        missing = await kept.verify(None)
        assert isinstance(missing, Refusal) and missing.reason is RefusalReason.MISSING
    finally:
        await redis.aclose()


async def test_the_served_api_refuses_a_revoked_token_within_the_cache_seconds(settings):
    settings = settings.model_copy(update={"api_token_cache_seconds": 1.0})
    token = await make_token(settings, "alice", Role.USER, "risk")
    with api_in_thread(settings, port=0) as url:
        async with httpx.AsyncClient(base_url=url, headers=bearer(token), timeout=30) as http:
            assert (await http.get("/v1/jobs")).status_code == 200  # verified (and kept) before the revoke
            redis = connect_redis(settings)
            try:
                await TokenStore(redis, Keys.for_environment(settings.environment)).revoke(token.split("_")[1])
            finally:
                await redis.aclose()
            revoked_at = time.monotonic()
            # the bound under test: from 1 s after the revoke, no request is served with the token
            await asyncio.sleep(max(0.0, revoked_at + 1.0 - time.monotonic()))
            r = await http.get("/v1/jobs")
            assert r.status_code == 401 and r.json()["reason"] == "revoked", r.text


async def test_the_submit_answer_is_the_stored_record(settings, served):
    token = await make_token(settings, "alice", Role.USER, "risk")
    inp = pa.table({"user.id": [1, 2], "asof": pa.array(TIMES, type=pa.timestamp("us", tz="UTC"))})
    async with httpx.AsyncClient(base_url=served, headers=bearer(token), timeout=30) as http:
        r = await http.post("/v1/jobs", content=arrow_body(inp), headers=ARROW, params={
            "output": ["user.f0"], "input_times_column": "asof", "tag": ["project=churn"], "query_name": "q",
            "correlation_id": "c-1", "max_retries": "1", "completion_deadline": "2099-01-01T00:00:00"})
    assert r.status_code == 201, r.text
    answered = JobRecord.model_validate_json(r.content)
    async with AsyncJobQueueClient(settings) as client:
        stored = await client.store.get(answered.job_id)
    assert stored is not None and answered == stored
    assert (answered.status, answered.owner, answered.input_rows, answered.max_retries) == (
        JobStatus.QUEUED, "alice", 2, 1)


async def test_the_submitted_wake_comes_from_the_submit_script_once_per_created_job(settings):
    keys = Keys.for_environment(settings.environment)
    listener = connect_redis(settings)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(keys.events)
        assert (await pubsub.get_message(timeout=10))["type"] == "subscribe"
        async with AsyncJobQueueClient(settings) as client:
            handle = await client.offline_query({"user.id": [1, 2]}, ["user.f0"], TIMES)
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=10)
            assert message is not None and message["data"] == submitted_event("default").encode()
            record = await client.store.get(handle.id)
            assert record is not None
            with pytest.raises(DuplicateJobId):  # refused: nothing written, nobody woken
                await client.store.submit(record, keys.queue("default"), b"{}", 60_000,
                                          wake=(keys.events, submitted_event("default")))
            await client.redis.publish(keys.events, "marker")  # what comes next is after the refused submit
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=10)
            assert message is not None and message["data"] == b"marker"
    finally:
        await pubsub.aclose()
        await listener.aclose()


async def _wakes_until_marker(client: AsyncJobQueueClient, pubsub, keys: Keys) -> list[bytes]:
    """The messages on the events channel up to a marker published now (all that came before it)."""
    await client.redis.publish(keys.events, "marker")
    got: list[bytes] = []
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=10)
        assert message is not None, got
        if message["data"] == b"marker":
            return got
        got.append(message["data"])


async def test_a_sharded_query_and_a_scheduled_run_wake_the_group_once(settings):
    keys = Keys.for_environment(settings.environment)
    listener = connect_redis(settings)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(keys.events)
        assert (await pubsub.get_message(timeout=10))["type"] == "subscribe"
        async with AsyncJobQueueClient(settings) as client:
            # 4 shards, 2 due at once and 2 held: one wake for the query, from the first due shard's script
            handle = await client.offline_query({"user.id": [1, 2, 3, 4, 5, 6, 7, 8]}, ["user.f0"],
                                                num_shards=4, num_workers=2)
            assert await _wakes_until_marker(client, pubsub, keys) == [submitted_event("default").encode()]
            parent = await client.store.get(handle.id)
            assert parent is not None and len(parent.shard_ids) == 4
            # a scheduled run (exclusive, deterministic id): woken once when created, not when it exists already
            now = datetime.now(UTC)
            table, columns = prepare_input(client, {"user.id": [1]}, ["user.f0"], None, now)
            run = PreparedSubmission(table, columns, ["user.f0"], "default", "run-" + handle.id, now,
                                     exclusive=True, enforce_quotas=False)
            assert await client.submit_prepared(run)
            assert not await client.submit_prepared(run)
            assert await _wakes_until_marker(client, pubsub, keys) == [submitted_event("default").encode()]
    finally:
        await pubsub.aclose()
        await listener.aclose()


async def test_the_submit_answer_of_a_sharded_query_is_its_parent_as_read(settings, served):
    token = await make_token(settings, "alice", Role.USER, "risk")
    inp = pa.table({"user.id": [1, 2, 3, 4, 5, 6]})
    async with httpx.AsyncClient(base_url=served, headers=bearer(token), timeout=30) as http:
        r = await http.post("/v1/jobs", content=arrow_body(inp), headers=ARROW, params={
            "output": ["user.f0"], "num_shards": "3", "num_workers": "1", "priority": "high"})
    assert r.status_code == 201, r.text
    answered = JobRecord.model_validate_json(r.content)
    async with AsyncJobQueueClient(settings) as client:
        stored = await client.store.get(answered.job_id)
    assert stored is not None and answered == stored
    assert len(answered.shard_ids) == 3 and answered.num_workers == 1 and answered.status is JobStatus.QUEUED
