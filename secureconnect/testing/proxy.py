"""A TCP proxy a test owns, to put latency or a cut between the service and a real
dependency (PostgreSQL, Redis) without touching either.

    proxy = DelayProxy("127.0.0.1", pg.port)
    await proxy.start()
    url = pg.url_for("db").replace(f":{pg.port}/", f":{proxy.port}/")
    proxy.delay = 6.0      # every chunk, both directions, arrives 6 s late
    proxy.delay = 0.0      # back to normal for chunks read from now on
    await proxy.cut()      # drop every open connection (new ones are still accepted)
    await proxy.close()

Order within a connection is kept: each chunk leaves at max(its arrival + delay,
the previous chunk's departure). Bounded: a connection holds at most ``max_buffered``
bytes in flight per direction before the proxy stops reading from that side.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class DelayProxy:
    def __init__(self, target_host: str, target_port: int, *, delay: float = 0.0,
                 max_buffered: int = 8 << 20) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay = delay
        self.max_buffered = max_buffered
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()

    async def start(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, url: str) -> str:
        """``url`` with the target's port replaced by the proxy's."""
        return url.replace(f":{self.target_port}", f":{self.port}", 1)

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.target_host,
                                                               self.target_port)
        except OSError:
            client_w.close()
            return
        self.connections += 1
        link = _Link(writers=[client_w, server_w])
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(client_r, server_w, link)),
            asyncio.create_task(self._pump(server_r, client_w, link)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        self._close_link(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    link: _Link) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        buffered = 0
        room = asyncio.Event()
        room.set()

        async def send() -> None:
            nonlocal buffered
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    writer.close()
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()
                buffered -= len(chunk)
                if buffered <= self.max_buffered:
                    room.set()

        sender = asyncio.create_task(send())
        try:
            while True:
                await room.wait()
                chunk = await reader.read(65536)
                queue.put_nowait((time.monotonic() + self.delay, chunk))
                if not chunk:
                    break
                buffered += len(chunk)
                if buffered > self.max_buffered:
                    room.clear()
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            if not sender.done():
                sender.cancel()
            with contextlib.suppress(BaseException):
                await sender
            for w in link.writers:
                w.close()

    def _close_link(self, link: _Link) -> None:
        for w in link.writers:
            w.close()
        self._links.discard(link)

    async def cut(self) -> None:
        """Drop every open connection at once (a network failure)."""
        links = list(self._links)
        for link in links:
            for w in link.writers:
                with contextlib.suppress(Exception):
                    w.transport.abort()
            for t in link.tasks:
                t.cancel()
        for link in links:
            await asyncio.gather(*link.tasks, return_exceptions=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self.cut()
            await self._server.wait_closed()
            self._server = None
