"""Errors that become RFC 9457 problem details.

Raise a :class:`Problem` (or one of its subclasses) anywhere below a handler or a
WebSocket event handler; the kernel turns it into ``application/problem+json`` (HTTP)
or an ``error`` frame (WebSocket) carrying the same stable ``code``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

PROBLEM_CONTENT_TYPE = "application/problem+json"


class Problem(Exception):
    """An error a client is meant to see: HTTP status, stable ``code``, human ``detail``."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal Server Error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        # instance attributes shadow the class defaults when given
        if code is not None:
            self.code = code  # type: ignore[misc]
        if status is not None:
            self.status = status  # type: ignore[misc]
        if title is not None:
            self.title = title  # type: ignore[misc]
        self.headers = dict(headers or {})
        self.extra = extra

    def to_dict(
        self, *, request_id: str | None = None, instance: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:secureconnect:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance is not None:
            body["instance"] = instance
        if request_id is not None:
            body["request_id"] = request_id
        body.update(self.extra)
        return body


class BadRequest(Problem):
    status, code, title = 400, "bad_request", "Bad Request"


class ValidationFailed(Problem):
    """The body or query failed validation; ``errors`` lists each field's problem."""

    status, code, title = 400, "validation_error", "Validation Error"


class Unauthorized(Problem):
    status, code, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kwargs)


class Forbidden(Problem):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(Problem):
    status, code, title = 404, "not_found", "Not Found"


class MethodNotAllowed(Problem):
    status, code, title = 405, "method_not_allowed", "Method Not Allowed"


class Conflict(Problem):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(Problem):
    status, code, title = 413, "payload_too_large", "Payload Too Large"


class UnsupportedMediaType(Problem):
    status, code, title = 415, "unsupported_media_type", "Unsupported Media Type"


class Unprocessable(Problem):
    status, code, title = 422, "unprocessable", "Unprocessable Content"


class RateLimited(Problem):
    status, code, title = 429, "rate_limited", "Too Many Requests"

    def __init__(self, detail: str | None = None, *, retry_after: int, **kwargs: Any) -> None:
        retry_after = max(1, int(retry_after))
        kwargs.setdefault("headers", {"Retry-After": str(retry_after)})
        super().__init__(detail, retry_after=retry_after, **kwargs)


class ServiceUnavailable(Problem):
    status, code, title = 503, "service_unavailable", "Service Unavailable"


class GatewayTimeout(Problem):
    status, code, title = 504, "request_timeout", "Request Timeout"


class ConfigError(Exception):
    """Settings or plugin set-up that must stop start-up; the message names the fix."""
