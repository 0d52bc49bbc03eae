"""One loop for the manager's periodic chores that only the leader does (the garbage collector, the quota recount):
a run every `interval` seconds while this manager leads, until `stop`; a Redis outage is logged once until it ends
(`Outage`), any other failure is logged and the next run tries again. I/O: only what the chore does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from jobqueue.outage import REDIS_UNREACHABLE, Outage


async def every_while_leading(interval: float, stop: asyncio.Event, leader: Callable[[], bool],
                              run_once: Callable[[], Awaitable[Any]], what: str, log: Any,
                              first: Callable[[], Awaitable[None]] | None = None) -> None:
    """`run_once` every `interval` seconds (0: never) while `leader()`; `first`, when given, before each wait while
    leading (a chore that wants to do something at once rather than a run later; it decides when it is done)."""
    outage = Outage(log, what)
    while interval > 0 and not stop.is_set():
        if first is not None and leader():
            await first()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set() or not leader():
            continue
        try:
            await run_once()
            outage.recovered()
        except REDIS_UNREACHABLE as e:
            outage.failed(e)
        except Exception:
            log.exception(f"{what} failed; trying again next run")
