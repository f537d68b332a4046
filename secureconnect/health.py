"""Liveness and readiness.

``/health/live`` does no I/O. ``/health/ready`` runs every registered
:class:`HealthCheck` concurrently, each under its own timeout, and answers 503
naming each check that failed.
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


class Health:
    def __init__(self, checks: Sequence[HealthCheck], default_timeout: float,
                 metrics: Metrics | None = None) -> None:
        names = [c.name for c in checks]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"health checks registered twice: {', '.join(sorted(dupes))}")
        self.checks = list(checks)
        self.default_timeout = default_timeout
        # the last probe's outcome, for the "readiness failing" alert (kept fresh by
        # the load balancer's or orchestrator's readiness probe)
        self._ready = self._check_up = None
        if metrics is not None:
            self._ready = metrics.gauge("health_ready", "1 when the last readiness probe passed")
            self._check_up = metrics.gauge(
                "health_check_up", "1 when the check passed in the last readiness probe",
                ("check",))

    async def run(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        results = await asyncio.gather(*(self._run_one(c) for c in self.checks))
        report = dict(results)
        ok = all(r["status"] == "ok" for r in report.values())
        if self._ready is not None and self._check_up is not None:
            self._ready.set(1 if ok else 0)
            for name, outcome in report.items():
                self._check_up.labels(name).set(1 if outcome["status"] == "ok" else 0)
        return ok, report

    async def _run_one(self, check: HealthCheck) -> tuple[str, dict[str, Any]]:
        timeout = check.timeout or self.default_timeout
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await check.check()
        except TimeoutError:
            outcome: dict[str, Any] = {
                "status": "failed", "error": f"no answer within {timeout:g} s"}
        except Exception as exc:
            outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:300]}
        else:
            outcome = {"status": "ok"}
        outcome["duration_ms"] = round((time.perf_counter() - start) * 1000, 1)
        return check.name, outcome
