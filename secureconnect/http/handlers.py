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

from .. import jsonsafe
from ..errors import (
    BadRequest,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from ..models import rfc3339
from .context import KERNEL, PRINCIPAL, ROUTE

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - a dependency; json is the fallback
    _orjson = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..routing import Route

M = TypeVar("M", bound=BaseModel)


def bearer_token(request: web.Request) -> str | None:
    """The bearer token of the request; ``None`` when absent. A token that is not
    printable ASCII (no token we issue is) raises :class:`Unauthorized` at once."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    if not token.isascii() or not token.isprintable():
        raise Unauthorized("the access token is malformed", code="invalid_token")
    return token


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
            try:
                token = require_bearer(request)
                principal = await kernel.auth.authenticate(token)
            except Unauthorized:
                # a failed authentication counts against the client's address, so
                # guessing tokens meets the route's per-IP limit (429) like any request
                if rate_class != "none":
                    await kernel.rate_limits.check_request(request, rate_class, None)
                raise
            request[PRINCIPAL] = principal
        if rate_class != "none":
            await kernel.rate_limits.check_request(request, rate_class, principal)
        args: list[Any] = []
        if route.body is not None:
            args.append(await read_body(request, route.body))
        if route.query is not None:
            query = dict(request.query)
            try:
                jsonsafe.check(query)
            except jsonsafe.JsonRejected as exc:
                raise ValidationFailed(str(exc), code=exc.code, status=422) from None
            args.append(parse_model(route.query, query))
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
        return jsonsafe.loads(raw or b"null", max_depth=_max_depth(request))
    except jsonsafe.JsonRejected as exc:
        if exc.code == "invalid_unicode":
            raise ValidationFailed(str(exc), code=exc.code, status=422) from None
        if exc.code == "payload_too_large":  # pragma: no cover - no size given here
            raise PayloadTooLarge(str(exc)) from None
        raise BadRequest(str(exc), code=exc.code) from None


def _max_depth(request: web.Request) -> int:
    kernel = request.app.get(KERNEL)
    if kernel is None:
        return jsonsafe.DEFAULT_MAX_DEPTH
    return int(kernel.settings.http.get("max_json_depth", jsonsafe.DEFAULT_MAX_DEPTH))


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
        body = data.__pydantic_serializer__.to_json(data)
    else:
        body = dumps(data)
    return web.Response(body=body, status=status, content_type="application/json",
                        charset="utf-8", headers=headers)


def json_bytes(body: bytes, status: int = 200,
               headers: Mapping[str, str] | None = None) -> web.Response:
    """A response of JSON already rendered (an answer from the read cache)."""
    return web.Response(body=body, status=status, content_type="application/json",
                        charset="utf-8", headers=headers)


if _orjson is not None:
    # datetimes and dataclasses go to _default as with json (RFC 3339 with "Z", str)
    _ORJSON_OPTIONS = (_orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS
                       | _orjson.OPT_NON_STR_KEYS)


def dumps(data: Any) -> bytes:
    """Compact JSON of ``data`` as UTF-8 bytes: orjson when installed (several times
    faster than json on a page of messages), json for what orjson refuses (an integer
    past 64 bits, a key it cannot render) and where it is missing."""
    if _orjson is not None:
        try:
            return _orjson.dumps(data, default=_default, option=_ORJSON_OPTIONS)
        except TypeError:
            pass
    return json.dumps(data, default=_default, separators=(",", ":"),
                      ensure_ascii=False).encode()


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return rfc3339(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
