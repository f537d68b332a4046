"""Route declarations plugins return from ``sc_routes``.

A route carries what the kernel needs around the handler: its timeout, whether it
needs an access token, its rate-limit class, its body limit and the pydantic models
that validate the body and describe the response in ``/openapi.json``.

    routes = RouteTable(tag="polls")

    @routes.post("/v1/polls/{poll_id}/votes", body=VoteIn, response=PollOut)
    async def vote(request: web.Request, body: VoteIn) -> web.StreamResponse: ...
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[..., Awaitable[web.StreamResponse]]
NO_TIMEOUT: Literal[False] = False


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    #: seconds; ``None`` uses ``http.request_timeout``; ``False`` for streams/WebSockets
    timeout: float | Literal[False] | None = None
    #: require a valid access token (the principal is ``request[PRINCIPAL]``)
    auth: bool = True
    #: rate-limit class from ``[rate_limits]``; ``None`` uses the default class
    rate_limit: str | None = None
    #: maximum request body in bytes; ``None`` uses ``http.max_body_size``
    max_body: int | None = None
    #: pydantic model the JSON body is validated against; passed to the handler
    body: type[BaseModel] | None = None
    #: pydantic model of the success response (documentation only)
    response: type[BaseModel] | None = None
    status: int = 200
    #: media type of the success body when there is no ``response`` model (docs only)
    content_type: str = "application/json"
    query: type[BaseModel] | None = None
    summary: str = ""
    tag: str = ""
    name: str | None = None
    extra_responses: dict[int, str] = field(default_factory=dict)
    #: the handler authenticates the bearer token itself (``auth=False`` streams that
    #: also take ``?access_token=``): documented as bearer-secured all the same
    self_authenticated: bool = False


class RouteTable:
    """Collects :class:`Route` objects with decorators, like ``web.RouteTableDef``."""

    def __init__(self, *, tag: str = "", extra_responses: dict[int, str] | None = None) -> None:
        self._routes: list[Route] = []
        self.tag = tag
        #: problems every route of the table can answer (e.g. 403 "not a participant"),
        #: documented in /openapi.json; a route's own ``extra_responses`` add to them
        self.extra_responses = dict(extra_responses or {})

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def route(self, method: str, path: str, **options: Any) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            options.setdefault("tag", self.tag)
            options["extra_responses"] = {**self.extra_responses,
                                          **options.get("extra_responses", {})}
            if not options.get("summary") and handler.__doc__:
                options["summary"] = handler.__doc__.strip().splitlines()[0]
            self._routes.append(Route(method.upper(), path, handler, **options))
            return handler

        return register

    def get(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **options)

    def post(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **options)

    def put(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **options)

    def patch(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **options)

    def delete(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **options)
