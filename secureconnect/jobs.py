"""Periodic jobs collected from ``sc_jobs``.

Each job runs once per ``interval`` under its own timeout; a failing run is counted and
logged and never stops the scheduler. Time is cut into wall-clock windows of
``interval`` seconds; every instance wakes once per window (at a random point in its
first ``jitter`` fraction) and takes the window's lease in the shared cache
(``set_if_absent``) before running, so among instances sharing Redis exactly one runs a
job per window. During a Redis outage the lease falls back to the instance's memory:
jobs may then run on several instances, so they must be idempotent (all of ours are).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .kernel import Kernel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    name: str
    #: seconds between runs
    interval: float
    #: ``async def run(kernel) -> int | None`` — return how many items it handled
    func: Callable[[Kernel], Awaitable[Any]]
    #: seconds; ``None`` uses ``jobs.default_timeout``
    timeout: float | None = None
    #: run once soon after start-up instead of waiting a full interval
    run_at_start: bool = False


class JobScheduler:
    #: seconds :meth:`stop` waits for the job loops to end
    STOP_TIMEOUT = 5.0
    #: seconds between two cancellations of a loop that is still running in :meth:`stop`
    RECANCEL_EVERY = 0.2

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.settings = kernel.settings.jobs
        self.instance_id = uuid.uuid4().hex
        self.jobs: dict[str, Job] = {}
        self.owners: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        #: job name → ``{at, status, seconds, result}`` of its last run on this instance
        self.last_runs: dict[str, dict[str, Any]] = {}
        m = kernel.metrics
        self.runs = m.counter("job_runs_total", "Periodic job runs", ("job", "status"))
        self.duration = m.histogram("job_duration_seconds", "Periodic job duration", ("job",))

    def install(self, jobs: Iterable[tuple[str, Job]]) -> None:
        for plugin, job in jobs:
            if job.name in self.jobs:
                raise ConfigError(
                    f"job {job.name!r} is declared by both plugin '{self.owners[job.name]}' "
                    f"and plugin '{plugin}'; rename one"
                )
            if job.interval <= 0:
                raise ConfigError(f"job {job.name!r} of plugin '{plugin}': interval must be > 0")
            self.jobs[job.name] = job
            self.owners[job.name] = plugin

    async def start(self) -> None:
        if not self.settings.enabled:
            return
        self._stopping = False
        for job in self.jobs.values():
            self._tasks.append(asyncio.create_task(self._loop(job), name=f"job:{job.name}"))

    async def stop(self) -> None:
        """End every job loop, waiting at most :attr:`STOP_TIMEOUT` seconds.

        A ``cancel()`` can be lost on the way (Python 3.11's ``wait_for``, used by
        libraries, returns a result that was ready instead of raising), and a loop that
        lost it would run on and hold up the app's shutdown for ever: each loop also
        checks ``_stopping`` before every await of its own, and a loop still running is
        cancelled again every :attr:`RECANCEL_EVERY` seconds. Past the bound the
        stragglers are logged and left behind."""
        self._stopping = True
        tasks, self._tasks = self._tasks, []
        pending = {task for task in tasks if not task.done()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.STOP_TIMEOUT
        while pending:
            for task in pending:
                task.cancel()
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.error("job loops still running %g s after stop: %s", self.STOP_TIMEOUT,
                          ", ".join(sorted(task.get_name() for task in pending)))
                return
            _, pending = await asyncio.wait(pending, timeout=min(self.RECANCEL_EVERY, remaining))

    def _until_next_slot(self, job: Job) -> float:
        """Seconds to the start of the next interval window, plus jitter inside it."""
        now = time.time()
        next_start = (math.floor(now / job.interval) + 1) * job.interval
        return next_start - now + random.uniform(0, float(self.settings.jitter) * job.interval)

    async def _loop(self, job: Job) -> None:
        if not job.run_at_start:
            await asyncio.sleep(self._until_next_slot(job))
        while not self._stopping:
            try:
                if await self._acquire(job) and not self._stopping:
                    await self.run(job.name)
            except asyncio.CancelledError:
                raise
            except Exception:  # the scheduler itself must survive anything
                log.exception("job scheduler error for %s", job.name)
            if self._stopping:
                return
            await asyncio.sleep(self._until_next_slot(job))

    async def _acquire(self, job: Job) -> bool:
        """One lease per job and interval window across instances sharing the cache.

        Windows are aligned on the wall clock (``floor(now / interval)``), so every
        instance names the same window and exactly one of them wins it, whatever the
        instances' start times and jitter."""
        window = math.floor(time.time() / job.interval)
        key = f"sc:job-lease:{job.name}:{window}"
        cache = self.kernel.cache
        if await cache.set_if_absent(key, self.instance_id, ttl=job.interval * 2):
            return True
        # a retried SET NX whose first attempt landed but whose reply was lost reads
        # as "taken": the lease is ours if it carries our id
        return await cache.get(key) == self.instance_id

    async def run(self, name: str, *, raise_errors: bool = False) -> Any:
        """Run one job now (also used by ``secureconnect jobs run NAME``, which passes
        ``raise_errors`` to exit non-zero on a failed run). The outcome is kept in
        :attr:`last_runs` (shown by the admin console)."""
        job = self.jobs[name]
        timeout = job.timeout or float(self.settings.default_timeout)
        start = time.perf_counter()
        status, result = "failed", None
        try:
            async with asyncio.timeout(timeout):
                result = await job.func(self.kernel)
            status = "success"
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except TimeoutError:
            status = "timeout"
            self.runs.labels(name, "timeout").inc()
            log.error("job %s timed out after %.1f s", name, timeout)
            if raise_errors:
                raise
            return None
        except Exception:
            self.runs.labels(name, "failed").inc()
            log.exception("job %s failed", name)
            if raise_errors:
                raise
            return None
        finally:
            elapsed = time.perf_counter() - start
            self.duration.labels(name).observe(elapsed)
            self.last_runs[name] = {
                "at": time.time(), "status": status, "seconds": round(elapsed, 6),
                "result": result if isinstance(result, int | float | str | None) else str(result),
            }
        self.runs.labels(name, "success").inc()
        return result
