"""The polls metrics (names from the readiness report, section 4.5)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from secureconnect.metrics import Metrics


@dataclass(frozen=True)
class PollMetrics:
    created: Counter
    votes_cast: Counter
    active: Gauge
    expired: Counter
    publish_failed: Counter

    @classmethod
    def build(cls, m: Metrics) -> PollMetrics:
        return cls(
            created=m.counter("polls_created_total", "Polls created", ("type",)),
            votes_cast=m.counter(
                "votes_cast_total", "Ballots cast (a revote counts again)", ("poll_type",)
            ),
            active=m.gauge("polls_active_total", "Polls currently open"),
            expired=m.counter("polls_expired_total", "Polls closed by reaching closes_at"),
            publish_failed=m.counter(
                "polls_event_publish_failed_total",
                "poll.* WebSocket events that could not be published (state was saved)",
            ),
        )
