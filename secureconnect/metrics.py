"""Prometheus metrics: one registry per application, get-or-create helpers.

Plugins call ``kernel.metrics.counter(...)`` (and ``gauge``/``histogram``) where they
need a metric; asking twice for the same name returns the same object, so a plugin can
declare its metrics in a small ``metrics.py`` and build them from any hook.
Names follow the audit reports (``request_duration_seconds``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, MetricWrapperBase] = {}

    def _get(self, cls: type[M], name: str, doc: str, labels: Sequence[str], **kw: Any) -> M:
        existing = self._metrics.get(name)
        if existing is not None:
            if not isinstance(existing, cls):
                raise ValueError(f"metric {name!r} already registered as {type(existing).__name__}")
            return existing
        metric = cls(name, doc, list(labels), registry=self.registry, **kw)
        self._metrics[name] = metric
        return metric

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._get(Counter, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return self._get(Gauge, name, doc, labels)

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return self._get(Histogram, name, doc, labels, buckets=tuple(buckets))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current sample value (``0.0`` when absent). Handy in tests and health pages."""
        got = self.registry.get_sample_value(name, labels or {})
        return 0.0 if got is None else float(got)


class HttpMetrics:
    """The kernel's request metrics (names from the readiness report)."""

    def __init__(self, m: Metrics) -> None:
        self.duration = m.histogram(
            "request_duration_seconds", "HTTP request latency",
            ("method", "path", "status"),
        )
        self.in_flight = m.gauge("request_in_flight", "HTTP requests being served")
        self.timeouts = m.counter("request_timeout_total", "HTTP requests cut by their timeout")
        self.timeout_duration = m.histogram(
            "request_timeout_duration_seconds", "Time until a request timed out",
            ("method", "path"),
        )
        self.hook_errors = m.counter(
            "plugin_hook_errors_total", "Exceptions raised by plugin hook implementations",
            ("hook", "plugin"),
        )
