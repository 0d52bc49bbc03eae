"""`FinishWatch`: what `wait()` blocks on between two reads of a job's record, instead of polling it.

The transition that makes a job final publishes its new status on the job's finished channel
(`Keys.job_finished`, from the same Lua script: `JobStore`). The watch subscribes before the record is read, so
a finish between the read and the wait is not missed; a message, or the watch's own timeout (the caller's slow
safety poll), says "read the record again". A subscription lost with its connection (Redis restarted, the
connection killed) is dropped and made again on the next `subscribe()`, which comes before the next read: what
finished meanwhile is seen by that read. Pub/sub delivers at most once, so the record stays the truth and the
watch is only the cue to read it.

Its connection is named `jobqueue-wait:<job id>` (`CLIENT LIST` shows who waits on what).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from jobqueue.logs import get_logger
from jobqueue.outage import REDIS_UNREACHABLE

log = get_logger("jobqueue.sdk")
CONNECTION_NAME = "jobqueue-wait:{job_id}"


class FinishWatch:
    """One job's finished channel, subscribed on demand. `subscribe()` before reading the record, `wait(t)` after."""

    def __init__(self, redis: Redis, channel: str, job_id: str) -> None:
        self._redis = redis
        self._channel = channel
        self._name = CONNECTION_NAME.format(job_id=job_id)
        self._pubsub: PubSub | None = None

    @property
    def subscribed(self) -> bool:
        return self._pubsub is not None

    async def subscribe(self) -> bool:
        """Subscribe unless subscribed; False when Redis cannot be reached (the caller polls instead)."""
        if self._pubsub is not None:
            return True
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.connect()
            assert pubsub.connection is not None
            await pubsub.connection.send_command("CLIENT", "SETNAME", self._name)
            await pubsub.connection.read_response()
            await pubsub.subscribe(self._channel)
        except REDIS_UNREACHABLE as e:
            log.debug("cannot watch the job's finish; polling", error=str(e))
            await _close(pubsub)
            return False
        self._pubsub = pubsub
        return True

    async def wait(self, timeout: float) -> bool:
        """Block until the job's finish is published (True) or `timeout` seconds pass (False). A lost subscription
        returns True at once: read the record, then `subscribe()` again."""
        if self._pubsub is None:
            await asyncio.sleep(timeout)
            return False
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while True:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                         timeout=max(0.0, deadline - time.monotonic()))
                if message is not None and message.get("type") == "message":
                    return True
                if time.monotonic() >= deadline:
                    return False
        except REDIS_UNREACHABLE as e:
            log.debug("lost the job's finish subscription", error=str(e))
            await self.close()
            return True

    async def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await _close(pubsub)


async def _close(pubsub: PubSub) -> None:
    with contextlib.suppress(*REDIS_UNREACHABLE):
        await pubsub.aclose()
