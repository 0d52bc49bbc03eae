"""`LookupCache`: small values every submission reads from Redis (the current registry version, the groups the
manager serves), reused for a few seconds by a busy process (the API: JOBQUEUE_API_CACHE_SECONDS).

    lookups = LookupCache(seconds=1.0)
    current = await lookups.get("registry_current", store.read_current)   # Redis at most once a second
    lookups.forget("registry_current")                                       # after this process changed it

With `seconds` 0 (every client but the API) each `get` loads: nothing is ever stale.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class LookupCache:
    """Named values with the monotonic time their load started; one per client (one event loop). Calls that find
    a value expired while it is being loaded await that one load: a busy API reads Redis once, not once per
    request in flight."""

    def __init__(self, seconds: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._values: dict[str, tuple[float, asyncio.Future[Any]]] = {}

    async def get(self, name: str, load: Callable[[], Awaitable[T]]) -> T:
        if self.seconds <= 0:
            return await load()
        now = self.clock()
        hit = self._values.get(name)
        if hit is not None and now - hit[0] < self.seconds:
            await asyncio.wait([hit[1]])  # this call's cancellation does not cancel the load others await
            if not hit[1].cancelled():
                value: T = hit[1].result()
                return value
            return await load()  # that load failed: this call makes its own (and raises its own error)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._values[name] = (now, future)
        try:
            loaded = await load()
        except BaseException:
            if self._values.get(name, (0.0, None))[1] is future:
                del self._values[name]  # a failed load is not kept: the next call tries again
            future.cancel()
            raise
        future.set_result(loaded)
        return loaded

    def forget(self, name: str | None = None) -> None:
        """Load `name` (or every value) again on the next `get`."""
        if name is None:
            self._values.clear()
        else:
            self._values.pop(name, None)
