"""The per-conversation send line: places taken in arrival order, served in that order,
in two steps (submitted to the store, then done = published)."""

from __future__ import annotations

import asyncio

from secureconnect_plugins.chat.sendline import OrderedLines


async def _started(coro: object) -> asyncio.Task[None]:
    task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
    await asyncio.sleep(0)  # let it reach its wait
    return task


async def test_each_step_waits_for_every_earlier_place_and_no_later_one() -> None:
    line = OrderedLines()
    first, second, _third = (line.reserve("c") for _ in range(3))
    other = line.reserve("another conversation")
    await asyncio.wait_for(other.submit_turn(), 1)  # lines are per key
    await asyncio.wait_for(other.turn(), 1)
    await asyncio.wait_for(first.submit_turn(), 1)  # the head never waits

    second_submits = await _started(second.submit_turn())
    second_publishes = await _started(second.turn())
    assert not second_submits.done() and not second_publishes.done()

    first.submitted()  # submitted, not yet published
    await asyncio.wait_for(second_submits, 1)
    await asyncio.sleep(0.01)
    assert not second_publishes.done()

    first.close()
    await asyncio.wait_for(second_publishes, 1)
    assert len(line) == 2  # "c" (third is still in line) and the other key


async def test_a_place_given_up_early_still_keeps_the_order() -> None:
    line = OrderedLines()
    first, second, third = (line.reserve("c") for _ in range(3))
    second.close()  # refused before it submitted anything (say, not a participant)
    third_submits = await _started(third.submit_turn())
    third_publishes = await _started(third.turn())
    await asyncio.sleep(0.01)
    # giving up does not let the third go ahead of the first
    assert not third_submits.done() and not third_publishes.done()
    first.submitted()
    await asyncio.wait_for(third_submits, 1)
    assert not third_publishes.done()
    first.close()
    await asyncio.wait_for(third_publishes, 1)
    third.close()
    assert len(line) == 0  # a finished line is dropped


async def test_a_cancelled_waiter_does_not_cancel_the_place_before_it() -> None:
    line = OrderedLines()
    first, second = line.reserve("c"), line.reserve("c")
    waiting = await _started(second.turn())
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    first.close()  # the first place still completes normally
    second.close()
    assert len(line) == 0
