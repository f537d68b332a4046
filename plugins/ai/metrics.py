"""The ai metrics (issue 18)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from secureconnect.metrics import Metrics

#: model work takes longer than an HTTP handler: seconds
AI_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass(frozen=True)
class AiMetrics:
    requests: Counter
    tokens: Counter
    latency: Histogram
    encrypted_skipped: Counter
    queued: Gauge

    @classmethod
    def build(cls, m: Metrics) -> AiMetrics:
        return cls(
            requests=m.counter(
                "ai_requests_total",
                "AI requests by feature, provider and outcome (ok, quota_exceeded, timeout, "
                "unavailable, busy, error)",
                ("feature", "provider", "status"),
            ),
            tokens=m.counter(
                "ai_tokens_total", "Provider tokens (reported or estimated)",
                ("provider", "direction"),
            ),
            latency=m.histogram(
                "ai_latency_seconds", "Time to answer an AI request", ("feature", "provider"),
                buckets=AI_BUCKETS,
            ),
            encrypted_skipped=m.counter(
                "ai_encrypted_skipped_total",
                "End-to-end encrypted messages left out of AI requests (never read)",
            ),
            queued=m.gauge(
                "ai_queued_requests",
                "AI requests of this instance waiting for a concurrency slot "
                "(at most ai.max_queued)",
            ),
        )
