"""Liveness and readiness.

``/health/live`` does no I/O. ``/health/ready`` runs every registered
:class:`HealthCheck` concurrently, each under its own timeout (answered on time even
when the check's clean-up is slow: a check past its timeout is abandoned to the
background), and answers 503 naming each *required* check that failed. A check with
``required=False`` (a dependency the service degrades without, such as Redis) that
fails is reported as ``degraded`` and the answer stays 200 with status ``degraded``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .metrics import Metrics


@dataclass(frozen=True)
class HealthCheck:
    name: str
    check: Callable[[], Awaitable[Any]]
    #: seconds; ``None`` uses ``health.check_timeout``
    timeout: float | None = None
    #: False: the service works without it (a failure is ``degraded``, not 503)
    required: bool = True


class Health:
    def __init__(self, checks: Sequence[HealthCheck], default_timeout: float,
                 metrics: Metrics | None = None) -> None:
        names = [c.name for c in checks]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"health checks registered twice: {', '.join(sorted(dupes))}")
        self.checks = list(checks)
        self.default_timeout = default_timeout
        self._abandoned: set[asyncio.Future[Any]] = set()
        # the last probe's outcome, for the "readiness failing" alert (kept fresh by
        # the load balancer's or orchestrator's readiness probe)
        self._ready = self._check_up = None
        if metrics is not None:
            self._ready = metrics.gauge("health_ready", "1 when the last readiness probe passed")
            self._check_up = metrics.gauge(
                "health_check_up", "1 when the check passed in the last readiness probe",
                ("check",))

    async def run(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """``(ready, report)``: ready unless a required check failed."""
        results = await asyncio.gather(*(self._run_one(c) for c in self.checks))
        report = dict(results)
        ready = all(r["status"] != "failed" for r in report.values())
        if self._ready is not None and self._check_up is not None:
            self._ready.set(1 if ready else 0)
            for name, outcome in report.items():
                self._check_up.labels(name).set(1 if outcome["status"] == "ok" else 0)
        return ready, report

    @staticmethod
    def overall(ready: bool, report: dict[str, dict[str, Any]]) -> str:
        if not ready:
            return "failed"
        return "degraded" if any(r["status"] == "degraded" for r in report.values()) else "ok"

    async def _run_one(self, check: HealthCheck) -> tuple[str, dict[str, Any]]:
        timeout = check.timeout or self.default_timeout
        start = time.perf_counter()
        task = asyncio.ensure_future(check.check())
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            self._abandon(task)
            raise
        if not done:
            self._abandon(task)
            outcome: dict[str, Any] = {
                "status": "failed", "error": f"no answer within {timeout:g} s"}
        elif task.exception() is not None:
            exc = task.exception()
            outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:300]}
        else:
            outcome = {"status": "ok"}
        if outcome["status"] == "failed" and not check.required:
            outcome["status"] = "degraded"
        outcome["duration_ms"] = round((time.perf_counter() - start) * 1000, 1)
        return check.name, outcome

    def _abandon(self, task: asyncio.Future[Any]) -> None:
        """Cancel a check past its time without waiting for its clean-up."""
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)
        task.add_done_callback(_consume)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning
