"""WebSocket gateway (placeholder: handler table only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..kernel import Kernel


class Connection:
    """One authenticated client connection (WebSocket or event stream)."""

    user_id: Any

    async def subscribe(self, topic: str) -> None:
        raise NotImplementedError


WsHandler = Callable[[Connection, dict[str, Any]], Awaitable[Any]]


class Gateway:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.handlers: dict[str, WsHandler] = {}
        self.owners: dict[str, str] = {}

    def install_handlers(self, handlers: Iterable[tuple[str, tuple[str, WsHandler]]]) -> None:
        for plugin, (event_type, handler) in handlers:
            if event_type in self.handlers:
                raise ConfigError(
                    f"WebSocket event {event_type!r} is handled by both plugin "
                    f"'{self.owners[event_type]}' and plugin '{plugin}'; disable one of them"
                )
            self.handlers[event_type] = handler
            self.owners[event_type] = plugin

    async def publish(self, topic: str, event_type: str, data: Any) -> None:
        return None

    async def shutdown(self) -> None:
        return None
