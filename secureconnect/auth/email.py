"""Outgoing mail: a pluggable sender.

* ``outbox`` (default): keeps the last ``outbox_size`` mails in memory and logs each
  one. Meant for development and tests (tests read the mailed tokens from
  ``kernel.auth.mailer.outbox``); production logs a warning at start-up.
* ``smtp``: aiosmtplib with STARTTLS or implicit TLS and a timeout.

Mail is sent in background tasks owned by :class:`Mailer`: a slow or failing mail
server never slows down or fails the request (and request latency does not reveal
whether an address has an account). Failures are logged and counted in
``auth_mail_failed_total``; at most ``max_pending`` mails are in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol

from ..metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    #: machine-readable facts about the mail (purpose, token) for the outbox
    tags: dict[str, str] = field(default_factory=dict)


class MailSender(Protocol):
    async def send(self, mail: Mail) -> None: ...


class OutboxSender:
    """Keeps mails in memory (bounded) and logs them. The body (with its live
    verification or reset link) is logged only when ``log_bodies`` is set, which
    :func:`build_sender` does in the ``development`` environment alone."""

    def __init__(self, size: int, *, log_bodies: bool = False) -> None:
        self.outbox: deque[Mail] = deque(maxlen=size)
        self.log_bodies = log_bodies

    async def send(self, mail: Mail) -> None:
        self.outbox.append(mail)
        if self.log_bodies:
            log.info("mail (outbox backend) to %s: %s\n%s", mail.to, mail.subject, mail.text)
        else:
            log.info("mail (outbox backend) to %s: %s (body not logged outside "
                     "development)", mail.to, mail.subject)


class SmtpSender:
    def __init__(self, s: Any) -> None:
        self.s = s

    async def send(self, mail: Mail) -> None:
        import aiosmtplib

        s = self.s
        message = EmailMessage()
        message["From"] = str(s.mail_from)
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message.set_content(mail.text)
        tls = str(s.smtp_tls)
        await aiosmtplib.send(
            message,
            hostname=str(s.smtp_host),
            port=int(s.smtp_port),
            username=str(s.smtp_username) or None,
            password=str(s.smtp_password) or None,
            use_tls=tls == "tls",
            start_tls=tls == "starttls",
            timeout=float(s.smtp_timeout),
        )


class Mailer:
    """Sends mail in owned, bounded background tasks."""

    def __init__(self, sender: MailSender, metrics: Metrics, *, max_pending: int = 100) -> None:
        self.sender = sender
        self.max_pending = max_pending
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = metrics.counter("auth_mail_sent_total", "Mails handed to the mail server")
        self.failed = metrics.counter(
            "auth_mail_failed_total", "Mails that could not be sent (or were dropped)"
        )

    @property
    def outbox(self) -> deque[Mail]:
        """The outbox of the ``outbox`` backend (empty deque for other backends)."""
        box = getattr(self.sender, "outbox", None)
        return box if isinstance(box, deque) else deque()

    def defer(self, job: Callable[[], Awaitable[None]], what: str) -> None:
        """Run ``job`` (which prepares and submits a mail) in the same bounded set of
        background tasks, so the caller answers before any of its I/O."""
        if len(self._tasks) >= self.max_pending:
            self.failed.inc()
            log.error("mail queue full (%d pending); dropped %s", len(self._tasks), what)
            return
        task = asyncio.create_task(self._run(job, what), name="auth:mail-job")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Callable[[], Awaitable[None]], what: str) -> None:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed.inc()
            log.error("preparing %s failed: %s: %s", what, type(exc).__name__, exc)

    def submit(self, mail: Mail) -> None:
        if len(self._tasks) >= self.max_pending:
            self.failed.inc()
            log.error(
                "mail queue full (%d pending); dropped a mail to %s", len(self._tasks), mail.to
            )
            return
        task = asyncio.create_task(self._send(mail), name="auth:mail")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, mail: Mail) -> None:
        try:
            await self.sender.send(mail)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed.inc()
            log.error("sending mail to %s failed: %s: %s", mail.to, type(exc).__name__, exc)
        else:
            self.sent.inc()

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for mails in flight — and the mails deferred jobs submit
        meanwhile — then cancel the rest (shutdown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - loop.time())
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def build_sender(s: Any, environment: str = "development") -> MailSender:
    if str(s.mail_backend) == "smtp":
        return SmtpSender(s)
    return OutboxSender(int(s.outbox_size), log_bodies=environment == "development")
