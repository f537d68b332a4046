"""The local model's worker processes over pipes (providers/worker_pool.py): answers,
a model error named by its type only, a caller that gives up, a dead worker, close."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

pytest.importorskip("wordllama")

from secureconnect_plugins.ai.providers.base import ProviderUnavailable
from secureconnect_plugins.ai.providers.worker_pool import (
    ModelFailed,
    WorkerDied,
    WorkerPool,
)

from .helpers import pid_alive

TEXTS = ["the release is on Friday", "who reviews the backup script?",
         "lunch at noon", "the budget review moved to Monday"]


@pytest.fixture
async def pool():
    pool = WorkerPool(1, nice=0, sched_idle=False)
    await pool.start()
    yield pool
    await pool.close()


async def test_answers_errors_by_type_and_stays_in_step(pool):
    picked = await pool.call("worker_pick", TEXTS, 2)
    assert len(picked) == 2 and all(0 <= i < len(TEXTS) for i in picked)
    assert await pool.call("worker_pick_many", [TEXTS, TEXTS[:2]], 2) == [
        picked, await pool.call("worker_pick", TEXTS[:2], 2)]
    # the model raises in the worker: its type, never its message, comes back
    with pytest.raises(ModelFailed) as failed:
        await pool.call("worker_pick", None, 2)
    assert str(failed.value) == "TypeError"
    with pytest.raises(ValueError):
        await pool.call("os.system", "true")  # only the model's functions
    # a caller that gives up: the worker finishes that request, then serves the next
    slow = asyncio.ensure_future(pool.call("worker_pick", TEXTS * 200, 8))
    await asyncio.sleep(0.01)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await pool.call("worker_pick", TEXTS, 2) == picked
    assert len(pool.pids) == 1


async def test_a_dead_worker_fails_its_request_and_is_replaced(pool):
    (pid,) = pool.pids
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerDied):
        await pool.call("worker_pick", TEXTS, 2)
    assert pool.pids == []
    assert len(await pool.call("worker_pick", TEXTS, 2)) == 2
    (fresh,) = pool.pids
    assert fresh != pid


async def test_close_ends_every_worker():
    pool = WorkerPool(2, nice=0, sched_idle=False)
    await pool.start()
    pids = pool.pids
    assert len(pids) == 2
    await pool.close()
    for pid in pids:
        assert not pid_alive(pid)
    with pytest.raises(ProviderUnavailable):
        await pool.call("worker_pick", TEXTS, 2)
