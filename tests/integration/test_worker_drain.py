"""The drain's cancel of an idle consumer's poll loop is never lost, whatever wakes the loop at the same moment."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from consumer.worker import build_worker
from tests.helpers import eventually


def parked_in_its_idle_wait(worker) -> bool:  # type: ignore[no-untyped-def]
    """The poll loop waits for a wake-up or its poll delay (no Redis call under way): its innermost frame is
    asyncio's own, inside `_poll_iteration`."""
    main = worker.main_task
    awaiting, codes = (main.get_coro() if main is not None and not main.done() else None), []
    while awaiting is not None and getattr(awaiting, "cr_code", None) is not None:  # the chain of awaits, inward
        codes.append(awaiting.cr_code)
        awaiting = awaiting.cr_await
    return (any(code.co_name == "_poll_iteration" for code in codes)
            and Path(codes[-1].co_filename).parent.name == "asyncio")


async def test_a_drain_that_comes_with_a_wake_up_still_ends_the_poll_loop(settings):
    worker = build_worker(settings, "default", max_jobs=1)
    run = asyncio.create_task(worker.async_run())
    try:
        await eventually(lambda: parked_in_its_idle_wait(worker), what="the idle poll loop")
        # a wake-up (a submission announced) and the drain's cancel in the same loop iteration: before the fix,
        # asyncio.wait_for returned the wake-up and the loop polled on, cancelled by nobody
        worker._wake.set()
        worker.main_task.cancel()
        done, _ = await asyncio.wait({run}, timeout=10)
        assert run in done, "the poll loop went on after its cancel"
        assert run.cancelled()
    finally:
        await worker.close()
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
