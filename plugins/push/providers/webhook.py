"""Webhook gateways (Matrix Sygnal / UnifiedPush style): the device's token *is* the
gateway URL; the notification JSON is POSTed to it.

Body: ``{"notification": {..payload.., "devices": [{"pushkey": <url>, "app_id": ..}]}}``
(docs/push.md). A 2xx answer may carry ``{"rejected": [pushkey, ...]}``: a rejected
pushkey is a dead token. The URL is checked against the SSRF guard before every send
(a name is resolved then, and the call goes to the address that was checked), redirects
are never followed, the body read is bounded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from ..urlguard import UnsafeUrl, pinned
from .base import Delivery, InvalidToken, Outcome, Rejected, Sent, status_outcome

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

MAX_ANSWER = 64 * 1024


class WebhookProvider:
    name = "webhook"

    def __init__(self, kernel: Kernel, allowed_hosts: Sequence[str], timeout: float) -> None:
        self.kernel = kernel
        self.allowed_hosts = tuple(allowed_hosts)
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def send(self, delivery: Delivery) -> Outcome:
        url = delivery.token
        try:
            target = await pinned(url, self.allowed_hosts)
        except UnsafeUrl:
            return Rejected("unsafe_url")
        body = {
            "notification": {
                **delivery.payload,
                "prio": "high" if delivery.priority == "high" else "low",
                "devices": [{"pushkey": url, "app_id": delivery.app_id}],
            }
        }
        async with self.kernel.http.post(
            target.url, json=body, headers=target.headers,
            server_hostname=target.server_hostname, allow_redirects=False,
            timeout=self.timeout,
        ) as resp:
            raw = await resp.content.read(MAX_ANSWER)
            outcome = status_outcome(resp.status, resp.headers.get("Retry-After"), "webhook")
        if not isinstance(outcome, Sent):
            return outcome
        if url in _rejected(raw):
            return InvalidToken("rejected")
        return outcome

    async def close(self) -> None:
        return None


def _rejected(raw: bytes) -> list[str]:
    try:
        answer: Any = json.loads(raw) if raw else {}
    except ValueError:
        return []
    rejected = answer.get("rejected") if isinstance(answer, dict) else None
    return [str(r) for r in rejected] if isinstance(rejected, list) else []
