"""Raw HTTP/1.1 over a real socket: requests aiohttp's client refuses to send."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


async def raw_request(client, head: bytes, body: bytes = b"", timeout: float = 5.0
                      ) -> RawResponse:
    """Send ``head`` (request line + headers, CRLF-separated, without the blank line)
    and ``body`` to the test server; parse the answer (connection closed after)."""
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(head + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    header_blob, _, payload = data.partition(b"\r\n\r\n")
    lines = header_blob.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return RawResponse(status, headers, payload)
