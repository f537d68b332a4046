"""The chat plugin's metrics (names from the chat-service audit report)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from secureconnect.metrics import Metrics


@dataclass(frozen=True)
class ChatMetrics:
    created: Counter
    persisted: Counter
    published: Counter
    delivery_duration: Histogram
    publish_errors: Counter
    publish_success: Counter
    client_dropped: Counter
    send_unauthorized: Counter
    ws_unauthorized: Counter
    idempotency_hits: Counter
    idempotency_misses: Counter
    rejected: Counter
    online_users: Gauge

    @classmethod
    def build(cls, m: Metrics) -> ChatMetrics:
        return cls(
            created=m.counter(
                "chat_message_created_total", "Messages created", ("message_type", "is_encrypted")
            ),
            persisted=m.counter(
                "chat_message_persisted_total", "Message persist attempts by outcome", ("status",)
            ),
            published=m.counter(
                "chat_message_published_total",
                "Realtime publishes of chat events by outcome",
                ("status",),
            ),
            delivery_duration=m.histogram(
                "chat_message_delivery_duration_seconds",
                "Time spent per step of a send (guard, persist, publish, notify)",
                ("step",),
            ),
            publish_errors=m.counter(
                "chat_redis_publish_error_total",
                "Chat publishes that failed (the send still succeeded)",
            ),
            publish_success=m.counter(
                "chat_redis_publish_success_total", "Chat publishes that succeeded"
            ),
            client_dropped=m.counter(
                "chat_client_message_dropped_total",
                "Chat events a slow client's socket could not take",
            ),
            send_unauthorized=m.counter(
                "chat_message_send_unauthorized_total",
                "Chat actions refused because the caller is not a participant",
            ),
            ws_unauthorized=m.counter(
                "chat_websocket_connection_unauthorized_total",
                "Conversation topic subscriptions refused to non-participants",
            ),
            idempotency_hits=m.counter(
                "chat_message_idempotency_hit_total",
                "Sends answered with the message an earlier try stored",
            ),
            idempotency_misses=m.counter(
                "chat_message_idempotency_miss_total",
                "Sends with an idempotency key that stored a new message",
            ),
            rejected=m.counter(
                "chat_message_rejected_total",
                "Messages refused by a sc_message_will_be_sent guard",
                ("reason",),
            ),
            online_users=m.gauge(
                "chat_presence_online_connections", "Connections this instance counts for presence"
            ),
        )
