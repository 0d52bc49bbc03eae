"""Live updates of a job's page over server-sent events, not polling: `GET /live/jobs/{id}` subscribes to the job's
changed channel (`Keys.job_changed`, published by `JobStore` in the same script as each transition, claim and cancel
request) and sends the page's changing part (`_job_live.html`) as a `card` event whenever the job changed, then
`end` once the job is final. The page's script (`static/job.js`) swaps it in; without JavaScript the page is simply
read once.

Same sign-in and policy as the page: a job the session may not read is 404. Each session holds at most
JOBQUEUE_CONSOLE_LIVE_STREAMS_PER_SESSION streams (429 beyond; counted in Redis, `Keys.console_live`, so every API
replica sees them), and every JOBQUEUE_CONSOLE_LIVE_CHECK_SECONDS a stream re-checks its session (a revoked token or a
sign-out ends it with `end`) and re-reads the job (its progress, and a change whose message was lost: pub/sub is at
most once, so the record stays the truth and a message is only the cue to read it).

    event: card            event: end
    data: <section ...     data: final | signed-out | gone
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from redis.asyncio import Redis
from starlette.responses import Response, StreamingResponse

from jobqueue.api.deps import Services, services
from jobqueue.auth.policy import Action
from jobqueue.console.job_page import live_context, render_live, visible
from jobqueue.console.sessions import Session, cookie_digest
from jobqueue.console.web import COOKIE, SECURITY_HEADERS, PageError, SignedIn, session_store
from jobqueue.keys import Keys
from jobqueue.logs import get_logger
from jobqueue.outage import REDIS_UNREACHABLE

router = APIRouter(include_in_schema=False)
log = get_logger("jobqueue.console")
STREAM_HEADERS = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}  # no proxy buffering of the events


def sse(event: str, data: str) -> str:
    """One server-sent event: every line of `data` as its own `data:` line."""
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in data.splitlines() or [""]) + "\n"


class LiveStreams:
    """The open streams of one session: a zset of stream id -> expiry (ms), each entry renewed at each check, so a
    stream of a process that died stops counting after a few checks."""

    def __init__(self, redis: Redis, keys: Keys, cookie: str, limit: int, check_seconds: float) -> None:
        self.redis, self.keys, self.session, self.limit = redis, keys, cookie_digest(cookie), limit
        self.keep_ms = max(1000, round(3 * check_seconds * 1000))
        self.stream_id = secrets.token_hex(8)

    async def open(self) -> bool:
        """Count this stream in; False (and not counted) when the session holds `limit` already."""
        now = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(self.keys.console_live(self.session), "-inf", now)
            pipe.zadd(self.keys.console_live(self.session), {self.stream_id: now + self.keep_ms})
            pipe.zcard(self.keys.console_live(self.session))
            pipe.pexpire(self.keys.console_live(self.session), self.keep_ms)
            _, _, count, _ = await pipe.execute()
        if int(count) > self.limit:
            await self.close()
            return False
        return True

    async def renew(self) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            expiry = int(time.time() * 1000) + self.keep_ms
            pipe.zadd(self.keys.console_live(self.session), {self.stream_id: expiry}, xx=True)
            pipe.pexpire(self.keys.console_live(self.session), self.keep_ms)
            await pipe.execute()

    async def close(self) -> None:
        with contextlib.suppress(*REDIS_UNREACHABLE):
            await self.redis.zrem(self.keys.console_live(self.session), self.stream_id)


async def open_stream(request: Request, svc: Services) -> tuple[str, LiveStreams]:
    """The session cookie and this request's stream, counted in; a 429 page when the session holds its limit."""
    cookie = request.cookies.get(COOKIE, "")
    settings = svc.settings
    streams = LiveStreams(svc.client.redis, svc.client.keys, cookie, settings.console_live_streams_per_session,
                          settings.console_live_check_seconds)
    if not await streams.open():
        raise PageError(429, f"this sign-in has {settings.console_live_streams_per_session} live pages open already "
                        "(JOBQUEUE_CONSOLE_LIVE_STREAMS_PER_SESSION): close one, or reload to read this page once")
    return cookie, streams


@router.get("/live/jobs/{job_id}")
async def live_job(request: Request, job_id: str, session: SignedIn) -> Response:
    svc = await services(request)
    record = await visible(session, job_id, Action.READ_JOB, svc)
    cookie, streams = await open_stream(request, svc)
    return StreamingResponse(_events(svc, session, cookie, record.job_id, record.shard_ids, streams),
                             media_type="text/event-stream", headers=STREAM_HEADERS)


async def _events(svc: Services, session: Session, cookie: str, job_id: str, shard_ids: list[str],
                  streams: LiveStreams) -> AsyncIterator[str]:
    check = svc.settings.console_live_check_seconds
    pubsub = svc.client.redis.pubsub(ignore_subscribe_messages=True)
    sent: str | None = None
    try:
        # a sharded query's parent changes when one of its shards does
        await pubsub.subscribe(*(svc.client.keys.job_changed(j) for j in [job_id, *shard_ids]))
        yield ": live\n\n"  # the headers and a first byte go out at once
        next_check = time.monotonic() + check
        while True:
            try:  # read after subscribing: a change between the page's read and now is in this read
                record = await visible(session, job_id, Action.READ_JOB, svc)
            except PageError:
                yield sse("end", "gone")
                return
            card = render_live(await live_context(svc, session, record))
            if card != sent:
                yield sse("card", card)
                sent = card
            if record.status.is_final:
                yield sse("end", "final")
                return
            while True:  # until the job changes or the next check
                left = next_check - time.monotonic()
                if left <= 0:
                    next_check = time.monotonic() + check
                    current = await session_store(svc).get(cookie)
                    if current is None or current.identity != session.identity:
                        yield sse("end", "signed-out")
                        return
                    await streams.renew()
                    yield ": ping\n\n"  # a browser that went away is noticed here at the latest
                    break
                message: dict[str, Any] | None = await pubsub.get_message(ignore_subscribe_messages=True,
                                                                          timeout=left)
                if message is not None and message.get("type") == "message":
                    break
    except REDIS_UNREACHABLE as e:  # the browser reconnects, and this stream's page reads again
        log.warning("console: live stream lost Redis", job_id=job_id, error=str(e))
    finally:
        with contextlib.suppress(*REDIS_UNREACHABLE):
            await pubsub.aclose()
        await streams.close()
