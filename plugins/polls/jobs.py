"""The auto-close job: polls past ``closes_at`` are closed and announced."""

from __future__ import annotations

from typing import TYPE_CHECKING

from secureconnect.jobs import Job

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

    from .service import PollService

EXPIRE_JOB = "polls.expire"


async def expire_due_polls(kernel: Kernel) -> int:
    service: PollService = kernel.state["polls"]
    return await service.expire_due()


def expire_job(interval: float) -> Job:
    # Runs once at start-up too: polls that expired while no instance ran close promptly.
    return Job(EXPIRE_JOB, interval, expire_due_polls, run_at_start=True)
