"""The video metrics (call metrics of the readiness report; cleanup metrics of the
hardening report, fix #5)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from secureconnect.metrics import Metrics


@dataclass(frozen=True)
class VideoMetrics:
    calls: Counter
    active: Gauge
    duration: Histogram
    failures: Counter
    relayed: Counter
    cleanup_stale: Counter
    cleanup_failed: Counter
    cleanup_duration: Histogram

    @classmethod
    def build(cls, m: Metrics) -> VideoMetrics:
        return cls(
            calls=m.counter("calls_total", "Calls initiated", ("type",)),
            active=m.gauge("calls_active", "Calls ringing or active (this instance's view)"),
            duration=m.histogram(
                "call_duration_seconds", "Seconds from the first answer to the end of a call"
            ),
            failures=m.counter(
                "call_failures_total",
                "Calls that ended without a conversation (missed, declined, stale)",
                ("reason",),
            ),
            relayed=m.counter(
                "call_signals_relayed_total", "Signaling frames relayed", ("type",)
            ),
            cleanup_stale=m.counter(
                "video_cleanup_stale_calls_total", "Stale calls ended by the reaper"
            ),
            cleanup_failed=m.counter(
                "video_cleanup_failed_total", "Reaper runs or calls the reaper failed to clean"
            ),
            cleanup_duration=m.histogram(
                "video_cleanup_duration_seconds", "Duration of a stale-call reaper run"
            ),
        )
