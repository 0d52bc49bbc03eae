"""A consumer's hand-back of a cut-off job lands though its task is cancelled again meanwhile: arq's worker cancels
its job tasks at the signal and once more in `close()`. With a plain `asyncio.shield` the second cancel ended the
task before the hand-back landed, so arq freed the job while its record still said running (a loaded CI run of
the drain test lost the job that way)."""

from __future__ import annotations

import asyncio

import pytest

from consumer.job import to_the_end


async def _job(landed: asyncio.Event, hand_back_seconds: float, guard) -> None:
    async def hand_back() -> None:
        await asyncio.sleep(hand_back_seconds)
        landed.set()

    try:
        await asyncio.sleep(60)  # the query, cut off
    except asyncio.CancelledError:
        await guard(hand_back())
        raise


@pytest.mark.parametrize("guard, lands", [(to_the_end, True), (asyncio.shield, False)])
async def test_the_hand_back_lands_before_a_twice_cancelled_task_ends(guard, lands):
    landed = asyncio.Event()
    task = asyncio.create_task(_job(landed, 0.2, guard))
    await asyncio.sleep(0.01)
    task.cancel()  # the signal
    await asyncio.sleep(0.05)
    task.cancel()  # the worker's close(), while the hand-back is under way
    with pytest.raises(asyncio.CancelledError):
        await task
    assert landed.is_set() is lands  # shield: the task ended first (the old behaviour, kept here as the contrast)
    await asyncio.sleep(0.3)  # let a shielded step that outlived its task finish before the loop closes


async def test_an_error_of_the_hand_back_is_raised():
    async def fails() -> None:
        raise RuntimeError("Redis said no")

    with pytest.raises(RuntimeError, match="Redis said no"):
        await to_the_end(fails())
