"""Admission: who may open a connection, the registry of open ones, and who must close.

Owns
    Refusing a connection request before any upgrade (shutting down, origin, missing or
    bad token, ``ws.max_connections`` / ``ws.max_connections_per_user``), the slot
    reserved for a request between its admission and its registration, the registry of
    open connections (by user and by session), registering a connection (its own
    ``user:<id>`` topic, its token's expiry, ``sc_ws_connected``) and unregistering it
    (every topic left, ``sc_ws_disconnected``), the closes ordered from outside:
    revoked sessions (bus topic ``auth:revoked``), expired tokens (1008) and shutdown
    (1001).

Guarantees
    * A refused request gets an RFC 9457 problem with a stable ``code`` and no socket.
    * Each admitted request holds one reserved slot until :meth:`Admission.release`,
      which the serving code calls exactly once (after registering, or on failure).
    * A registered connection is in every index until it is unregistered; unregistering
      is idempotent and leaves no topic subscribed.

Called by
    ``serving`` (``authenticate``, ``release``, ``register``, ``unregister``), the
    ``Gateway`` facade (``start``, ``close_all`` at shutdown, ``connections``), ``topics``
    (``connections_of``, for membership changes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..auth.service import REVOKED_TOPIC
from ..errors import Forbidden, Problem, Unauthorized
from .frames import CLOSE_POLICY
from .topics import USER_TOPIC_PREFIX

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..store.bus import Subscription
    from .config import GatewayConfig
    from .connection import Connection
    from .metrics import GatewayMetrics

log = logging.getLogger(__name__)


class Admission:
    def __init__(self, kernel: Kernel, config: GatewayConfig, metrics: GatewayMetrics) -> None:
        self.kernel = kernel
        self.config = config
        self.metrics = metrics
        #: every open connection of this instance (the set is never replaced)
        self.connections: set[Connection] = set()
        self._by_user: dict[str, set[Connection]] = {}
        self._by_session: dict[str, set[Connection]] = {}
        # admitted requests not registered yet, per user and in all
        self._reserved: dict[str, int] = {}
        self._reserved_total = 0
        self.accepting = True

    async def start(self) -> Subscription:
        """Listen to revoked sessions; admit connections again."""
        self.accepting = True
        return await self.kernel.bus.subscribe(REVOKED_TOPIC, self._on_revoked)

    def connections_of(self, user_id: str) -> set[Connection] | tuple[()]:
        """This instance's open connections of ``user_id`` (do not modify)."""
        return self._by_user.get(user_id, ())

    # -- admitting a request ----------------------------------------------------------
    async def authenticate(self, request: web.Request) -> Any:
        """The principal of a connection request, or a Problem (before any upgrade).
        The caller owes one :meth:`release` for the principal returned."""
        from ..http.handlers import bearer_token

        if not self.accepting:
            raise Problem(
                "the server is shutting down",
                code="shutting_down",
                status=503,
                title="Service Unavailable",
            )
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin):
            self.metrics.refused.labels("origin").inc()
            raise Forbidden("this origin may not open a connection", code="origin_forbidden")
        token = bearer_token(request) or request.query.get("access_token")
        if not token:
            self.metrics.unauthorized.inc()
            raise Unauthorized("an access token is required", code="missing_token")
        try:
            principal = await self.kernel.auth.authenticate(token)
        except Unauthorized:
            self.metrics.unauthorized.inc()
            raise
        # A slot is reserved until the connection registers: concurrent upgrades of
        # one user cannot slip past the limit while they await the handshake.
        user_id = str(principal.user_id)
        if len(self.connections) + self._reserved_total >= self.config.max_connections:
            self.metrics.refused.labels("global_limit").inc()
            raise Problem(
                "too many connections on this server",
                code="too_many_connections",
                status=503,
                title="Service Unavailable",
                headers={"Retry-After": "5"},
            )
        if (
            len(self._by_user.get(user_id, ())) + self._reserved.get(user_id, 0)
            >= self.config.max_connections_per_user
        ):
            self.metrics.refused.labels("user_limit").inc()
            raise Problem(
                "too many open connections for this user",
                code="too_many_connections",
                status=429,
                title="Too Many Requests",
                headers={"Retry-After": "5"},
            )
        self._reserved[user_id] = self._reserved.get(user_id, 0) + 1
        self._reserved_total += 1
        return principal

    def release(self, principal: Any) -> None:
        """Give back the slot :meth:`authenticate` reserved for ``principal``."""
        user_id = str(principal.user_id)
        left = self._reserved.get(user_id, 0) - 1
        if left > 0:
            self._reserved[user_id] = left
        else:
            self._reserved.pop(user_id, None)
        self._reserved_total -= 1

    def _origin_allowed(self, origin: str) -> bool:
        allowed = {str(o) for o in self.kernel.settings.cors.allow_origins}
        public = str(self.kernel.settings.app.public_url).rstrip("/")
        return "*" in allowed or origin in allowed or origin == public

    # -- the registry -----------------------------------------------------------------
    async def register(self, conn: Connection) -> None:
        self.connections.add(conn)
        self._by_user.setdefault(conn.user_id, set()).add(conn)
        self._by_session.setdefault(conn.session_id, set()).add(conn)
        self.metrics.connections.labels(conn.transport).inc()
        expires = float(getattr(conn.principal, "expires_at", 0.0) or 0.0)
        if expires:
            loop = asyncio.get_running_loop()
            delay = max(0.0, expires - time.time())
            conn.expiry = loop.call_later(delay, conn.request_close, CLOSE_POLICY, "token expired")
        await conn.subscribe(USER_TOPIC_PREFIX + conn.user_id)
        await self.kernel.notify("sc_ws_connected", conn=conn)

    async def unregister(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        conn.closing = True
        if conn.expiry is not None:
            conn.expiry.cancel()
        self.connections.discard(conn)
        for index, key in ((self._by_user, conn.user_id), (self._by_session, conn.session_id)):
            group = index.get(key)
            if group is not None:
                group.discard(conn)
                if not group:
                    del index[key]
        self.metrics.connections.labels(conn.transport).dec()
        for topic in list(conn.topics):
            await conn.unsubscribe(topic)
        await self.kernel.notify("sc_ws_disconnected", conn=conn)

    # -- closes ordered from outside ----------------------------------------------------
    def close_all(self, code: int, reason: str) -> None:
        """Admit no more connections and ask every open one to close (shutdown)."""
        self.accepting = False
        for conn in list(self.connections):
            conn.request_close(code, reason)

    def _on_revoked(self, _topic: str, message: bytes) -> None:
        try:
            body = json.loads(message)
            sessions = [str(s) for s in body.get("session_ids") or ()]
        except (ValueError, AttributeError, TypeError):
            log.warning("ignored a malformed %s message", REVOKED_TOPIC)
            return
        for sid in sessions:
            for conn in list(self._by_session.get(sid, ())):
                conn.request_close(CLOSE_POLICY, "session revoked")
