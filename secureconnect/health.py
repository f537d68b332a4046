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
from typing import Any


@dataclass(frozen=True)
class HealthCheck:
    name: str
    check: Callable[[], Awaitable[Any]]
    #: seconds; ``None`` uses ``health.check_timeout``
    timeout: float | None = None


class Health:
    def __init__(self, checks: Sequence[HealthCheck], default_timeout: float) -> None:
        names = [c.name for c in checks]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"health checks registered twice: {', '.join(sorted(dupes))}")
        self.checks = list(checks)
        self.default_timeout = default_timeout

    async def run(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        results = await asyncio.gather(*(self._run_one(c) for c in self.checks))
        report = dict(results)
        return all(r["status"] == "ok" for r in report.values()), report

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
