"""Per-route handler wrapper and JSON helpers.

The kernel wraps every plugin handler once, at start-up: authenticate (routes with
``auth=True``), apply the route's rate-limit class, validate the JSON body and query
against the route's pydantic models, then call the plugin's handler with them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..errors import BadRequest, Unauthorized, UnsupportedMediaType, ValidationFailed
from ..models import rfc3339
from .context import PRINCIPAL, ROUTE

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..routing import Route

M = TypeVar("M", bound=BaseModel)


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def require_bearer(request: web.Request) -> str:
    """The access token of ``Authorization: Bearer <token>``, or a 401 that says what
    is wrong: no header at all, or a header without the ``Bearer`` scheme."""
    token = bearer_token(request)
    if token is not None:
        return token
    header = request.headers.get("Authorization", "").strip()
    if not header:
        raise Unauthorized("an access token is required: send `Authorization: Bearer <token>`",
                           code="missing_token")
    scheme = header.partition(" ")[0]
    if scheme.lower() == "bearer":
        raise Unauthorized("the Authorization header has the Bearer scheme but no token",
                           code="missing_token")
    raise Unauthorized(
        "the Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`",
        code="invalid_auth_scheme",
    )


def wrap_handler(kernel: Kernel, route: Route) -> Any:
    rate_class = route.rate_limit or "default"

    async def handler(request: web.Request) -> web.StreamResponse:
        request[ROUTE] = route
        principal: Any = None
        if route.auth:
            token = require_bearer(request)
            principal = await kernel.auth.authenticate(token)
            request[PRINCIPAL] = principal
        if rate_class != "none":
            await kernel.rate_limits.check_request(request, rate_class, principal)
        args: list[Any] = []
        if route.body is not None:
            args.append(await read_body(request, route.body))
        if route.query is not None:
            args.append(parse_model(route.query, dict(request.query)))
        return await route.handler(request, *args)

    handler.sc_route = route  # type: ignore[attr-defined]
    handler.__name__ = getattr(route.handler, "__name__", "handler")
    return handler


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.content_type or 'none'}"
        )
    raw = await request.read()
    try:
        return json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="malformed_json") from None


async def read_body(request: web.Request, model: type[M]) -> M:
    data = await read_json(request)
    if not isinstance(data, Mapping):
        raise BadRequest("the body must be a JSON object", code="malformed_json")
    return parse_model(model, data)


def parse_model(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(
            "; ".join(_describe(e) for e in exc.errors()[:5]),
            status=422,
            errors=[
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ],
        ) from None


def _describe(error: Any) -> str:
    loc = ".".join(str(p) for p in error["loc"]) or "body"
    return f"{loc}: {error['msg']}"


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None
                  ) -> web.Response:
    """Serialise a pydantic model (or plain JSON-able data) into a response."""
    if isinstance(data, BaseModel):
        text = data.model_dump_json()
    else:
        text = json.dumps(data, default=_default)
    return web.Response(text=text, status=status, content_type="application/json",
                        headers=headers)


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return rfc3339(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
