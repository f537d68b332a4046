"""AI logic: settings, conversation policy, summaries and smart replies. Never sees an
HTTP request.

Order of checks for a feature request (each one refuses before any model work):
opted in (403 ``ai_not_enabled``) → the user's feature switch (403
``ai_feature_disabled``) → participant (403 ``not_a_participant``, through chat's
interface) → the conversation's policy (403 ``ai_disabled_in_conversation``) → daily
quota (429 ``quota_exceeded`` with ``Retry-After``) → a concurrency slot of this
instance (503 ``ai_busy`` with ``Retry-After`` after ``queue_timeout``, or at once when
``max_queued`` requests already wait) → then everything runs under
``request_timeout`` (504 ``ai_timeout``).

End-to-end encryption: messages with ``is_encrypted`` are counted and dropped here,
before anything else looks at them; their content is never copied, passed to a
provider or logged. Providers get :class:`Line` objects only (seq, an opaque speaker
label, readable text) — or, the local model's worker, the window's other messages, which
it filters into the same lines itself (:mod:`.readable`, :mod:`.providers.window`). Logs
carry ids and counts, never text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from secureconnect.errors import Forbidden, GatewayTimeout, Problem, RateLimited, ServiceUnavailable
from secureconnect_plugins.chat.api import CONVERSATIONS, Conversations, MessageText

from .chunking import STEP_LINES, line_cost, summarize_all
from .config import AiSettings
from .metrics import AiMetrics
from .providers.base import (
    Batch,
    Line,
    Provider,
    ProviderTimeout,
    ProviderUnavailable,
    Replies,
    Summary,
    Usage,
    Window,
    WindowProvider,
    WindowSummary,
)
from .readable import READABLE_TYPES, READER, Readable, Row, drop_encrypted, readable_lines
from .store import FEATURES, AiStore, AuditEntry, Policy, UserAiSettings

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R", Summary, Replies, Batch)


class AiNotEnabled(Forbidden):
    code = "ai_not_enabled"


class AiFeatureDisabled(Forbidden):
    code = "ai_feature_disabled"


class AiDisabledInConversation(Forbidden):
    code = "ai_disabled_in_conversation"


class NotConversationAdmin(Forbidden):
    code = "not_conversation_admin"


class AiBusy(ServiceUnavailable):
    code = "ai_busy"


class AiTimeout(GatewayTimeout):
    code = "ai_timeout"


class QuotaExceeded(RateLimited):
    code = "quota_exceeded"


@dataclass
class CallContext:
    user_id: str
    conversation_id: str
    feature: str
    #: audit rows of this request's provider calls, written together at its end
    entries: list[AuditEntry] = field(default_factory=list)
    #: the UTC day whose quota counted the request
    day: date | None = None


def seconds_to_midnight(now: datetime) -> int:
    tomorrow = (now + timedelta(days=1)).date()
    midnight = datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC)
    return max(1, int((midnight - now).total_seconds()) + 1)


class AiService:
    def __init__(self, kernel: Kernel, settings: AiSettings, provider: Provider,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.kernel = kernel
        self.settings = settings
        self.provider = provider
        self.store = AiStore(kernel.db)
        self.metrics = AiMetrics.build(kernel.metrics)
        self.clock = clock
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        #: requests waiting for a slot (at most ``max_queued``)
        self._waiting = 0

    @property
    def conversations(self) -> Conversations:
        # resolved per call: chat provides it while the app runs (plugins/chat/api.py)
        return self.kernel.require(CONVERSATIONS)

    async def close(self) -> None:
        await self.provider.close()

    # -- settings and policy ----------------------------------------------------------
    async def get_settings(self, user_id: str) -> dict[str, Any]:
        return (await self.store.user_settings(user_id)).as_dict()

    async def put_settings(self, user_id: str, *, enabled: bool | None, language: Any,
                           features: dict[str, bool] | None,
                           language_given: bool) -> dict[str, Any]:
        current = await self.store.user_settings(user_id)
        merged = dict(current.features)
        merged.update({k: v for k, v in (features or {}).items() if k in FEATURES})
        updated = UserAiSettings(
            enabled=current.enabled if enabled is None else enabled,
            language=language if language_given else current.language,
            features=merged,
        )
        await self.store.save_user_settings(user_id, updated)
        log.info("ai settings of user %s: enabled=%s", user_id, updated.enabled)
        return updated.as_dict()

    async def get_policy(self, user_id: str, conversation_id: str) -> dict[str, Any]:
        await self.conversations.require_participant(conversation_id, user_id)
        return await self._policy_view(conversation_id)

    async def put_policy(self, user_id: str, conversation_id: str,
                         changes: dict[str, bool]) -> dict[str, Any]:
        conversations = self.conversations
        await conversations.require_participant(conversation_id, user_id)
        if not await conversations.can_moderate(user_id, conversation_id):
            raise NotConversationAdmin(
                "only the conversation's owner or admins may change its AI policy")
        current = await self.store.policy(conversation_id)
        policy = Policy(
            summary=changes.get("summary", current.summary),
            smart_replies=changes.get("smart_replies", current.smart_replies),
            updated_by=user_id,
            updated_at=self.clock(),
        )
        await self.store.save_policy(conversation_id, policy)
        log.info("ai policy of conversation %s set by %s: summary=%s smart_replies=%s",
                 conversation_id, user_id, policy.summary, policy.smart_replies)
        return await self._policy_view(conversation_id)

    async def _policy_view(self, conversation_id: str) -> dict[str, Any]:
        return {"conversation_id": conversation_id,
                **(await self.store.policy(conversation_id)).as_dict()}

    # -- features ---------------------------------------------------------------------
    async def summary(self, user_id: str, conversation_id: str, *, since_seq: int | None,
                      limit: int | None) -> dict[str, Any]:
        ctx = CallContext(user_id, conversation_id, "summary")
        return await self._feature(ctx, lambda prefs: self._summary(ctx, prefs, since_seq, limit))

    async def smart_replies(self, user_id: str, conversation_id: str, *,
                            count: int) -> dict[str, Any]:
        ctx = CallContext(user_id, conversation_id, "smart_replies")
        return await self._feature(ctx, lambda prefs: self._replies(ctx, prefs, count))

    async def _feature(self, ctx: CallContext,
                       work: Callable[[UserAiSettings], Awaitable[dict[str, Any]]]
                       ) -> dict[str, Any]:
        prefs = await self._admit(ctx)
        status = "error"
        started = time.perf_counter()
        try:
            result = await self._bounded(lambda: work(prefs))
            status = "ok"
            return result
        except Problem as exc:
            status = _status_of(exc)
            raise
        finally:
            p = self.provider.name
            self.metrics.requests.labels(ctx.feature, p, status).inc()
            if status == "ok":
                self.metrics.latency.labels(ctx.feature, p).observe(
                    time.perf_counter() - started)
            if ctx.entries:
                # one write for the whole request (SQLite has one writer: chat's sends
                # must not queue behind a row per chunk)
                await asyncio.shield(self._record(ctx))
            elif status != "ok":
                # refused or failed before any provider call (503 ai_busy, a timeout
                # while reading, a cancelled request): it cost nothing, so it does not
                # count against the daily quota
                await asyncio.shield(self._refund(ctx))

    async def _admit(self, ctx: CallContext) -> UserAiSettings:
        prefs = await self.store.user_settings(ctx.user_id)
        if not prefs.enabled:
            raise AiNotEnabled(
                "AI features are off for this account; enable them with PUT /v1/ai/settings "
                '{"enabled": true}')
        if not prefs.features.get(ctx.feature, True):
            raise AiFeatureDisabled(f"AI feature {ctx.feature!r} is switched off in your "
                                    "AI settings")
        await self.conversations.require_participant(ctx.conversation_id, ctx.user_id)
        if not (await self.store.policy(ctx.conversation_id)).allows(ctx.feature):
            raise AiDisabledInConversation(
                f"the conversation's admins switched AI feature {ctx.feature!r} off")
        now = self.clock()
        s = self.settings
        ctx.day = now.date()
        if not await self.store.take_request(ctx.user_id, ctx.day,
                                             max_requests=s.daily_requests,
                                             max_tokens=s.daily_tokens):
            self.metrics.requests.labels(ctx.feature, self.provider.name,
                                         "quota_exceeded").inc()
            raise QuotaExceeded(
                f"daily AI quota used up ({s.daily_requests} requests or {s.daily_tokens} "
                "tokens a day); it resets at 00:00 UTC",
                retry_after=seconds_to_midnight(now))
        return prefs

    async def _bounded(self, work: Callable[[], Awaitable[T]]) -> T:
        s = self.settings
        if self._slots.locked() and self._waiting >= s.max_queued:
            # a burst queues no deeper than max_queued: the rest is refused at once
            raise AiBusy(f"every AI slot of this instance is busy ({s.max_concurrent}) and "
                         f"{self._waiting} request(s) already wait; retry shortly",
                         headers={"Retry-After": "1"})
        self._waiting += 1
        self.metrics.queued.inc()
        try:
            async with asyncio.timeout(s.queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise AiBusy(f"every AI slot of this instance is busy ({s.max_concurrent}); "
                         "retry shortly", headers={"Retry-After": "1"}) from None
        finally:
            self._waiting -= 1
            self.metrics.queued.dec()
        try:
            async with asyncio.timeout(s.request_timeout):
                return await work()
        except TimeoutError:
            raise AiTimeout(f"the AI request did not finish within {s.request_timeout:g} s"
                            ) from None
        finally:
            self._slots.release()

    # -- summary ------------------------------------------------------------------------
    async def _summary(self, ctx: CallContext, prefs: UserAiSettings,
                       since_seq: int | None, limit: int | None) -> dict[str, Any]:
        s = self.settings
        after = since_seq or 0
        window = max(1, min(limit or s.default_limit, s.max_messages))
        fetched = await self.conversations.texts(ctx.conversation_id, after_seq=after,
                                                 limit=window)
        rows, encrypted = await self._drop_encrypted(fetched)
        done = await self._summarize(ctx, prefs, rows)
        log.info("ai summary for user %s in conversation %s: %d read, %d encrypted skipped, "
                 "%d chunks", ctx.user_id, ctx.conversation_id, done.messages_read,
                 encrypted, done.chunks)
        summary = done.summary
        return {
            "summary": summary.text,
            "messages_read": done.messages_read,
            "encrypted_skipped": encrypted,
            "other_skipped": done.other_skipped,
            "truncated_messages": done.truncated,
            "provider": self.provider.name,
            "model": self.provider.model,
            "citations": list(summary.cited),
            "covered": {
                "from_seq": fetched[0].seq if fetched else None,
                "to_seq": fetched[-1].seq if fetched else None,
                "since_seq": since_seq,
                # False when older messages after since_seq were left out by `limit`
                "complete": not fetched or fetched[0].seq <= after + 1,
            },
            "chunks": done.chunks,
            "partials_clipped": done.clipped,
        }

    async def _summarize(self, ctx: CallContext, prefs: UserAiSettings,
                         rows: list[Row]) -> WindowSummary:
        """The summary of ``rows`` (no encrypted message among them): in one call to a
        :class:`WindowProvider` (the local model's worker filters, chunks and merges),
        else filtered here and summarised in chunks, one metered call each."""
        s = self.settings
        provider = self.provider
        if isinstance(provider, WindowProvider):
            return await self._window(ctx, provider, rows, Window(
                ctx.user_id, s.max_message_chars, s.max_input_chars, prefs.language))
        readable = await self._readable_in_steps(rows, reader_id=ctx.user_id)
        if not readable.lines:
            return WindowSummary(Summary(""), 0, readable.other_skipped, readable.truncated,
                                 0, 0, ())

        async def run(stage: str, n: int, call: Callable[[], Awaitable[R]]) -> R:
            return await self._metered(ctx, stage, n, call)

        outcome = await summarize_all(
            provider, readable.lines, budget=s.max_input_chars, language=prefs.language,
            concurrency=s.map_concurrency, run=run)
        return WindowSummary(outcome.summary, len(readable.lines), readable.other_skipped,
                             readable.truncated, outcome.chunks, outcome.clipped, ())

    # -- smart replies --------------------------------------------------------------------
    async def _replies(self, ctx: CallContext, prefs: UserAiSettings,
                       count: int) -> dict[str, Any]:
        s = self.settings
        fetched = await self.conversations.texts(
            ctx.conversation_id, after_seq=0, limit=max(20, s.context_messages * 3))
        incoming = [m for m in fetched if m.sender_id != ctx.user_id
                    and m.content is not None and m.message_type in READABLE_TYPES]
        last_msg = incoming[-1] if incoming else None
        base: dict[str, Any] = {"provider": self.provider.name, "model": self.provider.model,
                "based_on_seq": None, "encrypted_skipped": 0, "replies": []}
        if last_msg is None:
            return base
        if last_msg.is_encrypted:
            self.metrics.encrypted_skipped.inc()
            return {**base, "encrypted_skipped": 1, "reason": "latest_incoming_encrypted"}
        rows, encrypted = await self._drop_encrypted(
            [m for m in fetched if m.seq <= last_msg.seq])
        readable = await self._readable_in_steps(rows, reader_id=ctx.user_id)
        if not readable.lines or readable.lines[-1].seq != last_msg.seq:
            return base  # the latest incoming message has no text (blank)
        last = readable.lines[-1]
        context = _fit(readable.lines[:-1][-s.context_messages:],
                       s.max_input_chars - line_cost(last))
        result = await self._metered(
            ctx, "single", len(context) + 1,
            lambda: self.provider.smart_replies(context, last, count=count,
                                                language=prefs.language))
        return {**base, "based_on_seq": last.seq, "encrypted_skipped": encrypted,
                "replies": list(result.replies)}

    # -- shared -------------------------------------------------------------------------
    async def _drop_encrypted(self, messages: Sequence[MessageText]) -> tuple[list[Row], int]:
        """:func:`.readable.drop_encrypted`, ``4 * STEP_LINES`` messages a turn of the
        event loop; the dropped ones are counted in the metrics."""
        rows: list[Row] = []
        dropped = 0
        for start in range(0, len(messages), 4 * STEP_LINES):
            if start:
                await asyncio.sleep(0)
            part, n = drop_encrypted(messages[start:start + 4 * STEP_LINES])
            rows += part
            dropped += n
        if dropped:
            self.metrics.encrypted_skipped.inc(dropped)
        return rows, dropped

    async def _readable_in_steps(self, rows: Sequence[Row], *, reader_id: str) -> Readable:
        """:func:`.readable.readable_lines` of a long window, ``STEP_LINES`` messages a turn
        of the event loop (chat's sends run between the turns)."""
        speakers = {reader_id: READER}
        total = Readable([], 0, 0)
        for start in range(0, len(rows), STEP_LINES):
            if start:
                await asyncio.sleep(0)
            total.add(readable_lines(rows[start:start + STEP_LINES], reader_id=reader_id,
                               max_chars=self.settings.max_message_chars, speakers=speakers))
        return total

    async def _metered(self, ctx: CallContext, stage: str, message_count: int,
                       call: Callable[[], Awaitable[R]]) -> R:
        """One provider call: timed, its tokens counted against the quota and in the
        metrics, and one audit row written (ids and counts only)."""
        started = time.perf_counter()
        status, usage = "error", Usage()
        try:
            result = await call()
            status, usage = "ok", result.usage
            return result
        except BaseException as exc:
            status = _call_status(exc)
            raise
        finally:
            self._audit(ctx, stage, message_count, usage, status,
                        int((time.perf_counter() - started) * 1000))

    async def _window(self, ctx: CallContext, provider: WindowProvider, rows: list[Row],
                      window: Window) -> WindowSummary:
        """A whole-window summary: one audit row per model call it made (or one for
        the failed call), as :meth:`_metered` writes for the line-by-line path."""
        started = time.perf_counter()
        try:
            done = await provider.summarize_window(rows, window)
        except BaseException as exc:
            self._audit(ctx, "window", len(rows), Usage(), _call_status(exc),
                        int((time.perf_counter() - started) * 1000))
            raise
        for call in done.calls:
            self._audit(ctx, call.stage, call.message_count, call.usage, "ok",
                        call.latency_ms)
        return done

    def _audit(self, ctx: CallContext, stage: str, message_count: int, usage: Usage,
               status: str, latency_ms: int) -> None:
        provider = self.provider
        self.metrics.tokens.labels(provider.name, "input").inc(usage.input_tokens)
        self.metrics.tokens.labels(provider.name, "output").inc(usage.output_tokens)
        ctx.entries.append(AuditEntry(
            user_id=ctx.user_id, conversation_id=ctx.conversation_id,
            feature=ctx.feature, provider=provider.name, model=provider.model,
            stage=stage, message_count=message_count,
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            status=status, latency_ms=latency_ms,
        ))

    async def _record(self, ctx: CallContext) -> None:
        today: date = self.clock().date()
        try:
            await self.store.record(ctx.user_id, today, ctx.entries)
        except Exception:
            log.exception("ai: could not record the usage and audit of %d %s call(s) by "
                          "user %s", len(ctx.entries), self.provider.name, ctx.user_id)

    async def _refund(self, ctx: CallContext) -> None:
        try:
            await self.store.refund_request(ctx.user_id, ctx.day or self.clock().date())
        except Exception:
            log.exception("ai: could not give back the quota of a refused request by "
                          "user %s", ctx.user_id)

    async def prune(self) -> int:
        return await self.store.prune(self.settings.audit_retention_days)


def _fit(context: Sequence[Line], room: int) -> list[Line]:
    """The newest lines of ``context`` whose framed size fits ``room`` (the request
    budget left after the message being answered), in conversation order."""
    kept: list[Line] = []
    for line in reversed(context):
        room -= line_cost(line)
        if room < 0:
            break
        kept.append(line)
    kept.reverse()
    return kept


def _call_status(exc: BaseException) -> str:
    """A provider call's audit status for the exception that ended it."""
    if isinstance(exc, ProviderTimeout):
        return "timeout"
    if isinstance(exc, ProviderUnavailable):
        return "unavailable"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


def _status_of(exc: Problem) -> str:
    code = exc.code
    if code in ("ai_timeout",):
        return "timeout"
    if code in ("ai_unavailable", "dependency_unavailable"):
        return "unavailable"
    if code == "ai_busy":
        return "busy"
    return "error"
