"""Resilience helpers for plugins: deadline-aware retries and circuit breakers.

Retries (tenacity underneath)::

    result = await retry(lambda: kernel.http.get(url), retry_on=(aiohttp.ClientError,),
                         attempts=3, deadline=loop.time() + 2.0)

back off exponentially with jitter and never sleep past ``deadline`` (an event-loop
time): when the next pause would cross it, the last error is raised at once.

Circuit breakers, one per named dependency (``kernel.breaker("push")``)::

    async with kernel.breaker("push"):
        await send_push(...)

*closed* — calls go through; ``failure_threshold`` failures in a row open it.
*open* — calls are refused at once with :class:`CircuitOpenError` (503
``dependency_unavailable`` with ``Retry-After``) for ``reset_timeout`` seconds.
*half-open* — then up to ``half_open_max_calls`` trial calls go through; a success
closes the breaker, a failure opens it again.

Metrics: ``circuit_breaker_state{service}`` (0 closed, 1 open, 2 half-open),
``circuit_breaker_failures_total{service}``, ``circuit_breaker_requests_total{service,
result}`` with result ``success`` / ``failure`` / ``rejected``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from .errors import ServiceUnavailable
from .metrics import Metrics

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_STATE_VALUE = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    attempts: int = 3,
    base_delay: float = 0.05,
    max_delay: float = 2.0,
    deadline: float | None = None,
) -> T:
    """Run ``call`` until it succeeds, at most ``attempts`` times, retrying only the
    exception types in ``retry_on``; raises the last error. ``deadline`` is an absolute
    ``asyncio`` loop time no pause may cross."""
    loop = asyncio.get_running_loop()

    def past_deadline(state: RetryCallState) -> bool:
        if deadline is None:
            return False
        pause = state.upcoming_sleep if state.upcoming_sleep else 0.0
        return loop.time() + pause >= deadline

    def stop(state: RetryCallState) -> bool:
        return stop_after_attempt(attempts)(state) or past_deadline(state)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(retry_on),
        wait=wait_exponential(multiplier=base_delay, max=max_delay) + wait_random(0, base_delay),
        stop=stop,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover - tenacity re-raises


class CircuitOpenError(ServiceUnavailable):
    code = "dependency_unavailable"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        metrics: Metrics,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        failure_types: tuple[type[BaseException], ...] = (Exception,),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.half_open_max_calls = half_open_max_calls
        self.failure_types = failure_types
        self.clock = clock
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0
        self._state_gauge = metrics.gauge(
            "circuit_breaker_state", "0 closed, 1 open, 2 half-open", ("service",))
        self._failures_total = metrics.counter(
            "circuit_breaker_failures_total", "Calls that failed", ("service",))
        self._requests = metrics.counter(
            "circuit_breaker_requests_total", "Calls by outcome", ("service", "result"))
        self._set(CLOSED)

    @property
    def state(self) -> str:
        if self._state == OPEN and self.clock() - self._opened_at >= self.reset_timeout:
            self._set(HALF_OPEN)
        return self._state

    def _set(self, state: str) -> None:
        self._state = state
        if state == HALF_OPEN:
            self._trials = 0
        self._state_gauge.labels(self.name).set(_STATE_VALUE[state])

    # -- use -----------------------------------------------------------------------------
    def before_call(self) -> None:
        """Admit a call or raise :class:`CircuitOpenError`."""
        state = self.state
        if state == CLOSED:
            return
        if state == HALF_OPEN and self._trials < self.half_open_max_calls:
            self._trials += 1
            return
        self._requests.labels(self.name, "rejected").inc()
        remaining = max(0.0, self.reset_timeout - (self.clock() - self._opened_at))
        raise CircuitOpenError(
            f"{self.name} is unavailable (circuit open); retry later",
            headers={"Retry-After": str(max(1, math.ceil(remaining)))},
            service=self.name,
        )

    def record_success(self) -> None:
        self._requests.labels(self.name, "success").inc()
        self._failures = 0
        if self._state != CLOSED:
            self._set(CLOSED)

    def record_failure(self) -> None:
        self._requests.labels(self.name, "failure").inc()
        self._failures_total.labels(self.name).inc()
        self._failures += 1
        if self._state == HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self.clock()
            self._failures = 0
            self._set(OPEN)

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        async with self:
            return await fn(*args, **kwargs)

    async def __aenter__(self) -> CircuitBreaker:
        self.before_call()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            self.record_success()
        elif isinstance(exc, self.failure_types) and not isinstance(exc, CircuitOpenError):
            self.record_failure()
        elif self._state == HALF_OPEN:  # a trial that ended otherwise frees its slot
            self._trials = max(0, self._trials - 1)
