"""The SMTP mail backend against a minimal real SMTP server on a local socket."""

from __future__ import annotations

import asyncio
import email
from collections.abc import AsyncIterator

import pytest

from secureconnect.app import KERNEL
from secureconnect.testing import wait_for
from secureconnect.testing.accounts import register


class TinySmtpServer:
    """Just enough of RFC 5321 for one client: EHLO, MAIL, RCPT, DATA, QUIT."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def reply(line: str) -> None:
            writer.write(f"{line}\r\n".encode())

        sender, recipients = "", []
        reply("220 tiny ESMTP")
        try:
            while line := (await reader.readline()).decode().rstrip("\r\n"):
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    reply("250 tiny")
                elif verb == "MAIL":
                    sender = line.split(":", 1)[1].strip()
                    reply("250 ok")
                elif verb == "RCPT":
                    recipients.append(line.split(":", 1)[1].strip().strip("<>"))
                    reply("250 ok")
                elif verb == "DATA":
                    reply("354 go ahead")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    self.messages.append((sender, recipients, data[:-5]))
                    reply("250 queued")
                elif verb == "QUIT":
                    reply("221 bye")
                    break
                else:
                    reply("250 ok")
                await writer.drain()
        finally:
            await writer.drain()
            writer.close()


@pytest.fixture
async def smtp_server() -> AsyncIterator[TinySmtpServer]:
    server = TinySmtpServer()
    await server.start()
    yield server
    await server.close()


async def test_verification_mail_goes_out_over_smtp(sc_client, smtp_server):
    client = await sc_client(
        {
            "auth": {
                "mail_backend": "smtp",
                "smtp_host": "127.0.0.1",
                "smtp_port": smtp_server.port,
                "smtp_tls": "none",
                "mail_from": "SecureConnect <noreply@example.com>",
            }
        }
    )
    user = await register(client)
    await wait_for(lambda: smtp_server.messages, message="a mail at the SMTP server")
    _sender, recipients, raw = smtp_server.messages[0]
    assert recipients == [user["email"]]
    message = email.message_from_bytes(raw)
    assert message["Subject"] == "Confirm your email address"
    assert "/verify-email?token=" in message.get_payload(decode=True).decode()
    metrics = await (await client.get("/metrics")).text()
    assert "auth_mail_sent_total 1.0" in metrics


async def test_smtp_failure_never_fails_the_request(sc_client, smtp_server):
    port = smtp_server.port
    await smtp_server.close()  # nothing listens there any more
    client = await sc_client(
        {
            "auth": {
                "mail_backend": "smtp",
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "smtp_tls": "none",
                "smtp_timeout": 2,
            }
        }
    )
    await register(client)
    kernel = client.server.app[KERNEL]
    await kernel.auth.mailer.drain()
    metrics = await (await client.get("/metrics")).text()
    assert "auth_mail_failed_total 1.0" in metrics


def test_smtp_backend_needs_a_host(sc_app):
    from secureconnect.errors import ConfigError

    with pytest.raises(ConfigError, match="smtp_host"):
        sc_app({"auth": {"mail_backend": "smtp"}})
