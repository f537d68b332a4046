"""Requests aiohttp refuses before routing (malformed HTTP: NUL or a non-UTF-8 byte in
the request line or a header, a header over the size limit, too many headers).

aiohttp answers them itself with a 400/431 and logs the parser's exception with a
traceback at ERROR (one per request a client chooses to send). Here:

* :func:`quiet_parser_errors` turns those log records into one INFO line without a
  traceback (other records of ``aiohttp.server`` pass unchanged);
* :func:`install_request_factory` makes the application's requests a subclass whose
  response hook also runs for those error answers, so they carry the same security
  headers (and ``Server`` value) as every other response. It uses aiohttp's
  ``Application._make_request(..., _cls=...)`` extension parameter.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

_SERVER_LOGGER = "aiohttp.server"

OnPrepare = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


class _ParserErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed HTTP request from %s: %s"
            record.args = (remote, str(exc.message).splitlines()[0][:200] if exc.message
                           else type(exc).__name__)
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.INFO
            record.levelname = "INFO"
        return True


_FILTER = _ParserErrorFilter()


def quiet_parser_errors() -> None:
    """Idempotent: one filter on ``aiohttp.server`` per process."""
    logger = logging.getLogger(_SERVER_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def install_request_factory(app: web.Application, on_prepare: OnPrepare) -> None:
    """Requests of ``app`` run ``on_prepare`` on responses aiohttp makes without a
    route (its own parser-error answers), where ``on_response_prepare`` never fires."""

    class _Request(web.Request):
        async def _prepare_hook(self, response: web.StreamResponse) -> None:
            if self._match_info is None:
                await on_prepare(self, response)
                return
            await super()._prepare_hook(response)

    factory: Any = functools.partial(app._make_request, _cls=_Request)
    # Application warns on new attributes in debug mode only; this one is aiohttp's own
    object.__setattr__(app, "_make_request", factory)
