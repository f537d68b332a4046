"""The push metrics (issue 17)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from secureconnect.metrics import Metrics


@dataclass(frozen=True)
class PushMetrics:
    notifications: Counter
    failed: Counter
    invalid_tokens_removed: Counter
    outbox_depth: Gauge
    delivery_seconds: Histogram
    yields: Counter

    @classmethod
    def build(cls, m: Metrics) -> PushMetrics:
        return cls(
            notifications=m.counter(
                "push_notifications_total",
                "Notifications by outcome: sent, retried, dead_lettered, dropped, enqueued",
                ("provider", "status")),
            failed=m.counter(
                "push_failed_total", "Failed delivery attempts by reason",
                ("provider", "reason")),
            invalid_tokens_removed=m.counter(
                "push_invalid_tokens_removed_total",
                "Devices deleted because the provider called their token dead", ("provider",)),
            outbox_depth=m.gauge("push_outbox_depth",
                                 "Notifications waiting in the outbox (and events to expand)"),
            delivery_seconds=m.histogram(
                "push_delivery_seconds",
                "From enqueue to the provider's acceptance, in seconds", ("provider",)),
            yields=m.counter(
                "push_yields_total",
                "Pauses of the outbox workers because the event loop was busy (chat first)"),
        )
