"""Riding out a Redis outage: which errors mean "Redis is unreachable", and logging them calmly.

Every process keeps its state in Redis, so when Redis is down the right move is to wait and try
again, not to crash. `Outage` logs the first failure, then at most one line every `every` seconds,
and one line when Redis answers again, instead of a traceback per attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

REDIS_UNREACHABLE: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError)
T = TypeVar("T")


def redacted(url: str) -> str:
    """A Redis URL without its credentials, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class Log(Protocol):
    """Where an outage is told: a structlog logger (`jobqueue.logs.get_logger`)."""

    def info(self, event: str, **fields: Any) -> Any: ...

    def warning(self, event: str, **fields: Any) -> Any: ...


class Outage:
    """Tracks whether Redis is reachable, from one loop's point of view, and logs the changes."""

    def __init__(self, log: Log, what: str, every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.what, self.every, self.clock = log, what, every, clock
        self.since: float | None = None
        self._logged_at = 0.0
        self.failures = 0

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, error: BaseException, **fields: Any) -> float:
        """Record a failure; returns the backoff before the next attempt (0.5 s doubling to 5 s)."""
        now = self.clock()
        self.failures += 1
        if self.since is None:
            self.since, self._logged_at = now, now
            self.log.warning(f"redis unreachable; {self.what} will retry", error=str(error), **fields)
        elif now - self._logged_at >= self.every:
            self._logged_at = now
            self.log.warning(f"redis still unreachable; {self.what} retrying", error=str(error),
                             down_seconds=round(now - self.since, 1), **fields)
        return min(5.0, 0.5 * 2.0 ** min(self.failures - 1, 4))

    def recovered(self, **fields: Any) -> None:
        if self.since is not None:
            self.log.info(f"redis reachable again; {self.what} resumed",
                          down_seconds=round(self.clock() - self.since, 1), **fields)
        self.since, self.failures = None, 0


async def until_reachable(call: Callable[[], Awaitable[T]], outage: Outage, **fields: Any) -> T:
    """`await call()`, trying again with the outage's backoff for as long as Redis is unreachable."""
    while True:
        try:
            result = await call()
        except REDIS_UNREACHABLE as e:
            await asyncio.sleep(outage.failed(e, **fields))
            continue
        outage.recovered(**fields)
        return result
