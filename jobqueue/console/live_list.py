"""Live updates of the jobs table over server-sent events, not polling: `GET /live/jobs?ids=<id>,<id>...&new=1`
subscribes to the changed channel of each listed job the session may read (`Keys.job_changed`, published by
`JobStore` with each transition, claim and cancel request) and, with `new=1` (the first page in submission order),
to the submissions channel (`Keys.events`), and sends a `refresh` event when one of them fires. `states` are the
listed jobs' states as the page showed them: a job that changed between the page's read and the subscription is a
`refresh` at once. The page's script
(`static/jobs.js`) then has htmx fetch the table again, and the stream follows the new rows.

At most one `refresh` a second, however many jobs change: a burst is one refresh. Ids the session may not read are
dropped without a word (a `user` cannot learn when another owner's job changes). Same stream limit and session
re-check as a job's page (`jobqueue.console.live.LiveStreams`); each check also sends a `refresh`, as a safety
re-read, since pub/sub is at most once and a job can enter a filtered page without a message on its channels.

    event: live                   event: refresh
    data: subscribed              data: <the job id that changed, or `new`, or `check`>
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from redis.asyncio.client import PubSub
from starlette.responses import Response, StreamingResponse

from jobqueue.api.deps import Services, may, services
from jobqueue.auth.policy import Action
from jobqueue.console.live import STREAM_HEADERS, LiveStreams, open_stream, sse
from jobqueue.console.sessions import Session
from jobqueue.console.web import PageError, SignedIn, session_store
from jobqueue.logs import get_logger
from jobqueue.models import JOB_ID_PATTERN
from jobqueue.outage import REDIS_UNREACHABLE

router = APIRouter(include_in_schema=False)
log = get_logger("jobqueue.console")
MAX_IDS = 100  # a jobs page shows 50
MIN_REFRESH_SECONDS = 1.0
IDS_PATTERN = "^" + JOB_ID_PATTERN.strip("^$") + "(," + JOB_ID_PATTERN.strip("^$") + ")*$"


def parse_ids(ids: str) -> list[str]:
    """The job ids of `ids` (comma-separated), in order, without repeats; a 400 page beyond MAX_IDS."""
    found = list(dict.fromkeys(i for i in ids.split(",") if i))
    if len(found) > MAX_IDS:
        raise PageError(400, f"ids: at most {MAX_IDS} job ids, got {len(found)}")
    return found


@router.get("/live/jobs")
async def live_jobs(request: Request, session: SignedIn,
                    ids: Annotated[str, Query(max_length=MAX_IDS * 201, pattern=IDS_PATTERN)] = "",
                    states: Annotated[str, Query(max_length=MAX_IDS * 12, pattern="^[a-z,]*$")] = "",
                    new: Annotated[bool, Query()] = False) -> Response:
    svc = await services(request)
    wanted = parse_ids(ids) if ids else []
    shown = dict(zip(wanted, states.split(","), strict=False)) if states else {}
    cookie, streams = await open_stream(request, svc)
    return StreamingResponse(_events(svc, session, cookie, wanted, shown, new, streams),
                             media_type="text/event-stream", headers=STREAM_HEADERS)


async def _subscribe(svc: Services, session: Session, pubsub: PubSub, job_ids: list[str], shown: dict[str, str],
                     new: bool) -> tuple[dict[str, str], str | None]:
    """Subscribe to the channels of the listed jobs the session may read (and to submissions with `new`): channel ->
    what a refresh says of it, and the first listed job whose state is no longer what the page `shown`."""
    keys = svc.client.keys
    channels = {keys.job_changed(job_id): job_id for job_id in job_ids}
    if new:
        channels[keys.events] = "new"
    if channels:
        await pubsub.subscribe(*channels)
    # read after subscribing, so a change between the page's read and now is seen here or on a channel
    records = await svc.client.store.get_many(job_ids) if job_ids else []
    hidden = [keys.job_changed(job_id) for job_id, r in zip(job_ids, records, strict=True)
              if r is None or not may(session.identity, Action.READ_JOB, r, svc)]
    for channel in hidden:  # never followed: not a word about a job this session may not read
        del channels[channel]
    if hidden:
        await pubsub.unsubscribe(*hidden)
    changed = [r.job_id for r in records if r is not None and r.job_id in shown
               and keys.job_changed(r.job_id) in channels and shown[r.job_id] != r.status.value]
    return channels, changed[0] if changed else None


async def _events(svc: Services, session: Session, cookie: str, job_ids: list[str], shown: dict[str, str],
                  new: bool, streams: LiveStreams) -> AsyncIterator[str]:
    check = svc.settings.console_live_check_seconds
    pubsub = svc.client.redis.pubsub(ignore_subscribe_messages=True)
    try:
        channels, pending = await _subscribe(svc, session, pubsub, job_ids, shown, new)
        yield sse("live", "subscribed")  # from here on no change is missed (the page's script ignores it)
        next_check = time.monotonic() + check
        last_refresh = float("-inf")
        while True:
            now = time.monotonic()
            if pending is not None and now - last_refresh >= MIN_REFRESH_SECONDS:
                yield sse("refresh", pending)
                pending, last_refresh = None, now
            if now >= next_check:
                next_check = now + check
                current = await session_store(svc).get(cookie)
                if current is None or current.identity != session.identity:
                    yield sse("end", "signed-out")
                    return
                await streams.renew()
                pending = pending or "check"
                continue
            wait = next_check - now
            if pending is not None:
                wait = min(wait, last_refresh + MIN_REFRESH_SECONDS - now)
            message: dict[str, Any] | None = None
            if channels:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=max(wait, 0.0))
            else:
                await asyncio.sleep(max(wait, 0.0))
            if message is not None and message.get("type") == "message":
                channel = message["channel"]
                name = channel.decode() if isinstance(channel, bytes) else str(channel)
                if name in channels:  # not a message of a channel just left
                    pending = pending or channels[name]
    except REDIS_UNREACHABLE as e:  # the browser reconnects with the page's ids
        log.warning("console: live jobs stream lost Redis", error=str(e))
    finally:
        with contextlib.suppress(*REDIS_UNREACHABLE):
            await pubsub.aclose()
        await streams.close()
