"""Periodic cleanup of expired email tokens and long-ended sessions."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

from ..jobs import Job

if TYPE_CHECKING:
    from ..kernel import Kernel

log = logging.getLogger(__name__)

CLEANUP_JOB = "auth.cleanup_expired_tokens"


def _metrics(kernel: Kernel) -> tuple[Counter, Counter, Counter, Histogram]:
    m = kernel.metrics
    removed = m.counter(
        "auth_cleanup_expired_tokens_total",
        "Expired email-verification and password-reset tokens deleted",
    )
    sessions = m.counter(
        "auth_cleanup_expired_sessions_total", "Ended sessions (with their refresh tokens) deleted"
    )
    failed = m.counter("auth_cleanup_failed_total", "Token cleanup runs that failed")
    duration = m.histogram("auth_cleanup_duration_seconds", "Token cleanup run duration")
    return removed, sessions, failed, duration


async def cleanup_expired_tokens(kernel: Kernel) -> int:
    """Delete expired email-verification and password-reset tokens (and sessions that
    ended more than a day ago). Returns how many email tokens went."""
    removed, sessions, failed, duration = _metrics(kernel)
    start = time.perf_counter()
    try:
        tokens, ended = await kernel.auth.delete_expired()
    except Exception:
        failed.inc()
        raise
    finally:
        duration.observe(time.perf_counter() - start)
    removed.inc(tokens)
    sessions.inc(ended)
    if tokens or ended:
        log.info("auth cleanup: %d expired email tokens, %d ended sessions deleted", tokens, ended)
    return tokens


def cleanup_job(kernel: Kernel) -> Job:
    _metrics(kernel)  # on /metrics (at zero) before the first run
    return Job(CLEANUP_JOB, float(kernel.settings.auth.cleanup_interval), cleanup_expired_tokens)
