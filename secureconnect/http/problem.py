"""Turning errors into RFC 9457 ``application/problem+json`` responses."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import PROBLEM_CONTENT_TYPE, Problem
from .context import REQUEST_ID

# aiohttp's own HTTP errors → stable codes
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "service_unavailable",
    504: "request_timeout",
}


def problem_response(request: web.Request, problem: Problem) -> web.Response:
    body = problem.to_dict(request_id=request.get(REQUEST_ID), instance=request.path)
    resp = web.Response(
        status=problem.status,
        text=json.dumps(body, default=str),
        content_type=PROBLEM_CONTENT_TYPE,
    )
    for key, value in problem.headers.items():
        resp.headers[key] = value
    return resp


def from_http_exception(exc: web.HTTPException) -> Problem:
    code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    extra: dict[str, Any] = {}
    headers = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    return Problem(detail, code=code, status=exc.status, title=exc.reason, headers=headers, **extra)
