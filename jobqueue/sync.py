"""A private event loop on a daemon thread, so the synchronous SDK can drive the async one.

Works the same in scripts, in Jupyter (which already runs a loop) and in threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_UNWIND_SECONDS = 5.0


class LoopThread:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="jobqueue-sdk", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for it. Ctrl-C (KeyboardInterrupt in this thread) cancels it and waits
        (a few seconds at most) until it has unwound, so nothing of it, such as a poller or a progress bar, is
        left running on the loop when the interrupt propagates (a notebook catches it and goes on)."""
        finished = threading.Event()

        async def guarded() -> T:
            try:
                return await coro
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(guarded(), self._loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            finished.wait(timeout=_UNWIND_SECONDS)
            raise

    def is_current(self) -> bool:
        """True on the loop's own thread (where `run` would wait for itself)."""
        return threading.current_thread() is self._thread

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()
