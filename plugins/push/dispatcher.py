"""The outbox workers: claim due rows, send them through their provider, settle them.

One owned task per instance polls the outbox (woken early by :meth:`wake` after an
enqueue) and claims at most as many rows as there are free send slots; each provider
has its own semaphore (``push.concurrency``) and circuit breaker
(``kernel.breaker("push.<provider>")``). A provider's verdict settles the row:

* sent → deleted; dead token → device deleted (and its queue);
* retry → ``attempts + 1`` and ``next_attempt_at = now + backoff``, backoff =
  ``min(backoff_max, backoff_base * 2**attempts)`` with full jitter in [½, 1], but never
  sooner than the provider's ``Retry-After`` (capped at ``retry_after_max``);
* after ``max_attempts`` or ``max_age``, or a permanent rejection → dead letter;
* breaker open → put back until the breaker's trial time, no attempt counted.

Sent rows are deleted in groups (one ``DELETE`` for all the sends that finished while
the previous one ran), and a wake-up waits :data:`COALESCE` seconds so a burst of
enqueues is claimed in one go: on SQLite's single writer, per-row transactions would
compete with chat's own writes.

Shutdown cancels the tasks and gives claimed rows back, so a restart resends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from secureconnect.errors import ServiceUnavailable
from secureconnect.models import utcnow
from secureconnect.resilience import CircuitBreaker, CircuitOpenError

from .metrics import PushMetrics
from .outbox import Claimed, Outbox
from .providers.base import InvalidToken, Outcome, Provider, Rejected, Retry, Sent
from .settings import PushSettings

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

log = logging.getLogger(__name__)

#: seconds a wake-up waits for more enqueues before claiming
COALESCE = 0.02

#: chat first (see Dispatcher._pace): notifications sent per pause, the pause, and how
#: long after this instance's last chat send it counts as busy
YIELD_BATCH = 8
YIELD_PAUSE = 0.05
YIELD_WINDOW = 0.25
#: seconds between looks for events while the workers are busy with the outbox
EXPAND_EVERY = 0.1
#: seconds close() waits for the loop to finish its step before cancelling it
STOP_GRACE = 5.0

Expander = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


class _GroupDelete:
    """Deletes of sent rows, batched: callers wait for the statement that holds theirs."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.pending: list[tuple[Claimed, asyncio.Future[bool]]] = []
        self.task: asyncio.Task[None] | None = None

    async def done(self, c: Claimed) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append((c, future))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the sends finishing in this loop turn join
        while self.pending:
            batch, self.pending = self.pending, []
            try:
                deleted = await self.outbox.done_many([c for c, _ in batch])
            except Exception as exc:
                for _, f in batch:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for c, f in batch:
                if not f.done():
                    f.set_result(c.row["id"] in deleted)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class Dispatcher:
    def __init__(self, kernel: Kernel, settings: PushSettings, outbox: Outbox,
                 providers: Mapping[str, Provider], metrics: PushMetrics) -> None:
        self.kernel = kernel
        self.settings = settings
        self.outbox = outbox
        self.providers = dict(providers)
        self.metrics = metrics
        self._slots = {name: asyncio.Semaphore(settings.concurrency) for name in providers}
        self._wake = asyncio.Event()
        self._deletes = _GroupDelete(outbox)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # look for events to expand: after a wake-up or a full batch, else every
        # EXPAND_EVERY seconds (events written by other instances)
        self._events_due = True
        self._expand_at = 0.0
        self._chat_at = -YIELD_WINDOW  # monotonic time of this instance's last chat send
        #: claimed events → their outbox items (set by the service: who gets what)
        self.expander: Expander | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._claims: dict[str, int] = {}  # claim token → rows still in flight
        self._depth_at = 0.0
        #: rows waiting in the outbox, as last counted (plus what this instance added)
        self.depth = 0
        for name in providers:
            kernel.breaker(f"push.{name}", failure_threshold=settings.breaker_threshold,
                           reset_timeout=settings.breaker_reset)

    def breaker(self, provider: str) -> CircuitBreaker:
        return self.kernel.breaker(f"push.{provider}")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="push.dispatch")

    def wake(self) -> None:
        self._events_due = True
        self._wake.set()

    async def close(self) -> None:
        """Stop: the loop ends at its next step (never cut inside a database call, whose
        connection thread would otherwise answer into a closed event loop), in-flight
        sends are cancelled, claimed rows and events given back."""
        self._stopping = True
        self._wake.set()
        held = set(self._claims)  # (cancelled sends forget theirs as they end)
        await self._cancel_sends()  # (the loop may be waiting for them)
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_GRACE):
                    await asyncio.shield(self._task)
            held |= set(self._claims)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._cancel_sends()
        await self._deletes.close()
        try:
            await self.outbox.release(held)
        except Exception:  # the database may be gone already; leases expire anyway
            log.warning("push: could not release claimed outbox rows at shutdown")
        for p in self.providers.values():
            await p.close()

    async def _cancel_sends(self) -> None:
        sends = [t for t in self._sends if not t.done()]
        for t in sends:
            t.cancel()
        await asyncio.gather(*sends, return_exceptions=True)

    # -- the loop --------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            try:
                claimed = 0
                if self._events_due or time.monotonic() - self._expand_at >= EXPAND_EVERY:
                    claimed = await self._expand_some()
                claimed += await self._claim_some()
            except (ServiceUnavailable, OSError) as exc:
                log.warning("push: outbox unavailable (%s); retrying", type(exc).__name__)
                claimed = 0
            except Exception:
                log.exception("push: claiming from the outbox failed")
                claimed = 0
            if self._stopping:
                return
            if claimed:
                await self._pace()
                continue  # maybe more are due
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
                await asyncio.sleep(COALESCE)
            self._events_due = True  # woken, or time to poll: look for events too

    def chat_sent(self) -> None:
        """A chat message was sent on this instance (the service calls this from the
        hook: one clock read)."""
        self._chat_at = time.monotonic()

    def _chat_first(self) -> bool:
        """Yield to chat: this instance sent a chat message in the last
        ``YIELD_WINDOW`` seconds and the backlog is under ``push.yield_backlog``."""
        return (time.monotonic() - self._chat_at < YIELD_WINDOW
                and self.depth < self.settings.yield_backlog)

    async def _pace(self) -> None:
        """Chat first (in-process delivery): while this instance is sending chat
        messages, the workers send at most ``YIELD_BATCH`` notifications per
        ``YIELD_PAUSE`` (their own sends finished first), so a burst of sends keeps the
        CPU and the outbox absorbs the notifications; when chat is quiet, or the backlog
        reaches ``push.yield_backlog`` (a sustained load must not grow it without
        bound), full batches again. A worker that serves no chat never yields."""
        if not self._chat_first():
            return
        self.metrics.yields.inc()
        if self._sends:
            await asyncio.wait(set(self._sends))
        await asyncio.sleep(YIELD_PAUSE)

    async def _claim_some(self) -> int:
        await self.refresh_depth()
        slots = self.settings.concurrency * len(self.providers)
        free = max(0, slots - len(self._sends))
        limit = min(YIELD_BATCH if self._chat_first() else self.settings.batch_size, free)
        if self._sends and (limit == 0 or free < slots // 2):
            # claim in groups: one claim transaction per freed slot would compete
            # with chat's writes (SQLite has one writer)
            await asyncio.wait(self._sends, return_when=asyncio.FIRST_COMPLETED)
            return 1
        token = self.outbox.new_claim_token()
        self._claims[token] = self._claims.get(token, 0) + 1  # held while claiming
        try:
            rows = await self.outbox.claim(limit, token)
        finally:
            self._release_one(token)
        if self._stopping:  # closing meanwhile: give them back at once
            await self.outbox.release({token})
            return 0
        for c in rows:
            self._claims[c.claim_token] = self._claims.get(c.claim_token, 0) + 1
            task = asyncio.get_running_loop().create_task(self._deliver(c))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        return len(rows)

    async def _expand_some(self) -> int:
        """Claim unexpanded events and replace them by their outbox rows (the look-ups
        run here, on the delivering instance, never on the send path)."""
        if self.expander is None:
            return 0
        token = self.outbox.new_claim_token()
        self._claims[token] = 1  # held while expanding (released at shutdown)
        try:
            limit = YIELD_BATCH if self._chat_first() else self.settings.batch_size
            self._expand_at = time.monotonic()
            events = await self.outbox.claim_events(limit, token)
            self._events_due = len(events) == limit  # a full batch: maybe more wait
            if not events:
                return 0
            items = await self.expander(events)
            room = self.settings.max_outbox - (self.depth - len(events))
            if len(items) > room:  # the events go, their notifications are skipped
                self.metrics.failed.labels("-", "outbox_full").inc(len(items))
                log.warning("push: outbox full (%d); %d notification(s) of %d event(s) "
                            "skipped", self.depth, len(items), len(events))
                items = []
            kept = await self.outbox.expand(token, [e["id"] for e in events], items)
            self.depth += len(kept) - len(events)
            per_provider = Counter(i["provider"] for i in kept)
            for provider, n in per_provider.items():
                self.metrics.notifications.labels(provider, "enqueued").inc(n)
            return len(events)
        finally:
            self._release_one(token)

    async def refresh_depth(self) -> None:
        """Recount the outbox (at most once a second; between counts, ``depth`` grows
        with what this instance adds)."""
        now = time.monotonic()
        if now - self._depth_at >= max(1.0, self.settings.poll_interval):
            self._depth_at = now
            self.depth = await self.outbox.depth()
            self.metrics.outbox_depth.set(self.depth)

    async def _deliver(self, c: Claimed) -> None:
        try:
            await self._settle(c)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("push: settling outbox row %s failed", c.row["id"])
        finally:
            self._release_one(c.claim_token)

    def _release_one(self, token: str) -> None:
        left = self._claims.get(token, 1) - 1
        if left <= 0:
            self._claims.pop(token, None)
        else:
            self._claims[token] = left

    async def _settle(self, c: Claimed) -> None:
        d = c.delivery
        if d is None:  # device deleted or moved to another user since enqueue
            await self.outbox.done(c)
            self.metrics.notifications.labels(c.row["provider"], "dropped").inc()
            return
        name = self.settings.provider_for(d.platform)
        provider = self.providers[name]
        breaker = self.breaker(name)
        try:
            breaker.before_call()
        except CircuitOpenError as exc:
            wait = float(exc.headers.get("Retry-After", self.settings.breaker_reset))
            await self.outbox.reschedule(c, utcnow() + timedelta(seconds=wait),
                                         "circuit_open", count_attempt=False)
            self.metrics.failed.labels(name, "circuit_open").inc()
            return
        outcome: Outcome
        async with self._slots[name]:
            try:
                async with asyncio.timeout(self.settings.send_timeout):
                    outcome = await provider.send(d)
            except TimeoutError:
                outcome = Retry("timeout")
            except Exception as exc:
                outcome = Retry(f"network_{type(exc).__name__}")
        if isinstance(outcome, Retry):
            breaker.record_failure()
        else:
            breaker.record_success()
        await self._apply(c, name, outcome)

    async def _apply(self, c: Claimed, name: str, outcome: Outcome) -> None:
        row = c.row
        if isinstance(outcome, Sent):
            if await self._deletes.done(c):
                self.metrics.notifications.labels(name, "sent").inc()
                self.metrics.delivery_seconds.labels(name).observe(
                    (utcnow() - row["created_at"]).total_seconds())
            return
        if isinstance(outcome, InvalidToken):
            await self.outbox.drop_device(row["device_id"])
            self.metrics.invalid_tokens_removed.labels(name).inc()
            self.metrics.failed.labels(name, outcome.reason).inc()
            self.metrics.notifications.labels(name, "invalid_token").inc()
            return
        self.metrics.failed.labels(name, outcome.reason).inc()
        attempts = int(row["attempts"]) + 1
        too_old = (utcnow() - row["created_at"]).total_seconds() >= self.settings.max_age
        if isinstance(outcome, Rejected) or attempts >= self.settings.max_attempts or too_old:
            await self.outbox.dead_letter(c, outcome.reason)
            self.metrics.notifications.labels(name, "dead_lettered").inc()
            log.warning("push: notification %s dead-lettered after %d attempt(s): %s",
                        row["id"], attempts, outcome.reason)
            return
        delay = self.backoff(attempts, outcome.retry_after)
        await self.outbox.reschedule(c, utcnow() + timedelta(seconds=delay), outcome.reason)
        self.metrics.notifications.labels(name, "retried").inc()

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        s = self.settings
        delay = min(s.backoff_max, s.backoff_base * 2.0 ** (attempts - 1))
        delay *= random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, s.retry_after_max))
        return delay
