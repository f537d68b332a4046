"""What every provider implements, and the outcomes the dispatcher acts on.

A provider turns one :class:`Delivery` into one HTTP call and classifies the answer:

* :class:`Sent` — accepted; the outbox row is deleted.
* :class:`InvalidToken` — the provider says the token is dead (FCM ``UNREGISTERED``,
  APNs 410, Web Push 404/410, a gateway's ``rejected``): the device is deleted.
* :class:`Retry` — transient (429, 5xx, network): backed off, honouring
  ``retry_after``; counts as a failure of the provider's circuit breaker.
* :class:`Rejected` — permanent for this notification (e.g. another 400): dead-lettered
  at once, the token kept.

Exceptions a provider lets escape (timeouts, connection errors) count as :class:`Retry`.
Providers never log payloads or tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Delivery:
    outbox_id: str
    device_id: str
    user_id: str
    platform: str
    token: str
    app_id: str | None
    payload: dict[str, Any]
    collapse_key: str | None
    priority: str  # "high" | "normal"
    ttl: int


@dataclass(frozen=True)
class Sent:
    pass


@dataclass(frozen=True)
class InvalidToken:
    reason: str


@dataclass(frozen=True)
class Retry:
    reason: str
    retry_after: float | None = None


@dataclass(frozen=True)
class Rejected:
    reason: str


Outcome = Sent | InvalidToken | Retry | Rejected


class Provider(Protocol):
    name: str

    async def send(self, delivery: Delivery) -> Outcome: ...

    async def close(self) -> None: ...


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def status_outcome(status: int, retry_after: str | None, reason: str) -> Outcome:
    """The common reading of an HTTP status: 2xx sent, 429/5xx retried, rest rejected."""
    if 200 <= status < 300:
        return Sent()
    if status == 429 or status >= 500 or status == 408:
        return Retry(f"http_{status}", parse_retry_after(retry_after))
    return Rejected(f"{reason}_{status}")
