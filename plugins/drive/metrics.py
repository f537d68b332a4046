"""The drive metrics."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from secureconnect.metrics import Metrics


@dataclass(frozen=True)
class DriveMetrics:
    uploads: Counter
    bytes_stored: Gauge
    quota_exceeded: Counter
    cleanup_reservations: Counter
    cleanup_multipart: Counter
    cleanup_orphans: Counter
    cleanup_duration: Histogram

    @classmethod
    def build(cls, m: Metrics) -> DriveMetrics:
        return cls(
            uploads=m.counter(
                "drive_uploads_total",
                "Uploads by outcome: reserved, completed, mismatch, expired, deleted",
                ("status",)),
            bytes_stored=m.gauge("drive_bytes_stored", "Bytes of verified (ready) files"),
            quota_exceeded=m.counter(
                "drive_quota_exceeded_total", "Reservations refused for lack of quota"),
            cleanup_reservations=m.counter(
                "drive_cleanup_reservations_total",
                "Abandoned reservations deleted and their quota released"),
            cleanup_multipart=m.counter(
                "drive_cleanup_multipart_total", "Abandoned S3 multipart uploads aborted"),
            cleanup_orphans=m.counter(
                "drive_cleanup_orphans_total", "Stored objects without a file row deleted"),
            cleanup_duration=m.histogram(
                "drive_cleanup_duration_seconds", "Duration of one cleanup run"),
        )
