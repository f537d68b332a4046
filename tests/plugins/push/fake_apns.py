"""A fake APNs: an HTTP/2 (prior-knowledge h2c) server on loopback, built on ``h2``.

Records each request (kind ``"apns"``) into a :class:`FakeProvider`'s ``received`` list
and answers with its ``script`` (``None`` → 200).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h2.config
import h2.connection
import h2.events

from .fakes import FakeProvider, Received


class FakeApns:
    def __init__(self, record: FakeProvider) -> None:
        self.record = record
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, dict[str, Any]] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        streams[event.stream_id] = {
                            "headers": {(k.decode() if isinstance(k, bytes) else k):
                                        (v.decode() if isinstance(v, bytes) else v)
                                        for k, v in event.headers}, "body": b""}
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id]["body"] += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length,
                                                       event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        self._answer(conn, event.stream_id, streams.pop(event.stream_id))
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _answer(self, conn: h2.connection.H2Connection, stream_id: int,
                req: dict[str, Any]) -> None:
        headers = req["headers"]
        rec = Received("apns", headers[":path"], headers, req["body"],
                       asyncio.get_running_loop().time())
        self.record.received.append(rec)
        answer = self.record.script(rec) if self.record.script else None
        status, data, extra = answer if answer is not None else (200, None, {})
        body = json.dumps(data).encode() if data is not None else b""
        conn.send_headers(stream_id, [(":status", str(status)), ("apns-id", "fake"),
                                      *((k.lower(), v) for k, v in extra.items())],
                          end_stream=not body)
        if body:
            conn.send_data(stream_id, body, end_stream=True)
