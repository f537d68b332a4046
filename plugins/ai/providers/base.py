"""The provider interface: what the AI service asks of a model, local or remote.

Contract
--------
* A provider only ever receives :class:`Line` objects: readable (never encrypted)
  message text the service has already filtered, with the message's ``seq`` and an
  opaque speaker label (``P1``, ``P2``, …) instead of a user id. The one exception is
  a :class:`WindowProvider` (the local model): it gets the window's messages with
  the encrypted ones already dropped, and filters and labels them itself, with the
  same code (:mod:`..readable`).
* One call works on at most the character budget the service chose; splitting long
  conversations into chunks and merging the partial summaries (map-reduce) is the
  service's job (:mod:`..chunking`), not the provider's — or, for a
  :class:`WindowProvider`, the same code run in the provider's process.
* Every call answers its token use (estimated where the provider does not report it)
  so quotas and the audit can count it.
* Failures are :class:`ProviderTimeout` (→ 504 ``ai_timeout``) or
  :class:`ProviderUnavailable` (→ 503 ``ai_unavailable``); nothing else escapes.
* Providers never log message text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from secureconnect.errors import GatewayTimeout, ServiceUnavailable


class ProviderTimeout(GatewayTimeout):
    """The provider did not answer within its deadline."""

    code = "ai_timeout"


class ProviderUnavailable(ServiceUnavailable):
    """The provider failed, is not installed, or its breaker is open."""

    code = "ai_unavailable"


@dataclass(frozen=True)
class Line:
    """One readable message as a provider sees it."""

    seq: int
    speaker: str
    text: str


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    #: calls made to an external service (for the audit); 0 for local work
    external_calls: int = 0


@dataclass(frozen=True)
class Summary:
    """A (partial) summary: its text and the seqs of the messages it cites."""

    text: str
    cited: tuple[int, ...] = ()
    #: lines the summary was built from that a later merge may pick again (local only)
    picked: tuple[Line, ...] = field(default=(), repr=False)
    usage: Usage = Usage()


@dataclass(frozen=True)
class Batch:
    """Partial summaries of several chunks (or merged groups) made in one call."""

    parts: tuple[Summary, ...]
    usage: Usage = Usage()


@dataclass(frozen=True)
class Replies:
    replies: tuple[str, ...]
    usage: Usage = Usage()


def estimate_tokens(text: str) -> int:
    """A provider-neutral estimate (~4 characters a token), never below 1 for text."""
    return (len(text) + 3) // 4


class Provider(Protocol):
    name: str
    model: str

    async def start(self) -> None:
        """Get ready (load weights, …); called once, may be called again harmlessly."""
        ...

    async def summarize(self, lines: Sequence[Line], *, language: str | None) -> Summary:
        """Summarise one chunk of the conversation (within the budget)."""
        ...

    async def merge(self, parts: Sequence[Summary], *, language: str | None) -> Summary:
        """Merge partial summaries of consecutive chunks into one (within the budget)."""
        ...

    async def smart_replies(
        self, context: Sequence[Line], last: Line, *, count: int, language: str | None
    ) -> Replies:
        """Up to ``count`` short replies to ``last``, given the recent ``context``."""
        ...

    async def close(self) -> None: ...


class BatchingProvider(Provider, Protocol):
    """A provider that also summarises several chunks in one call (the local model: one
    round trip to its worker process instead of one per chunk). The service uses these
    where a provider has them; the answers equal ``summarize``/``merge`` of each."""

    async def summarize_many(self, chunks: Sequence[Sequence[Line]], *,
                             language: str | None) -> Batch: ...

    async def merge_many(self, groups: Sequence[Sequence[Summary]], *,
                         language: str | None) -> Batch: ...


@dataclass(frozen=True)
class Window:
    """What a whole-window summary needs besides the messages (see
    :class:`WindowProvider`): who reads (their own lines are labelled ``reader``), the
    cut of one message, the budget of one model call and the summary's language."""

    reader_id: str
    max_message_chars: int
    budget: int
    language: str | None = None


@dataclass(frozen=True)
class Call:
    """One model call made inside a whole-window summary, for the audit and metrics."""

    stage: str
    message_count: int
    usage: Usage
    latency_ms: int


@dataclass(frozen=True)
class WindowSummary:
    """A whole window summarised: the summary, what was read and skipped, and the
    calls it took."""

    summary: Summary
    messages_read: int
    other_skipped: int
    truncated: int
    chunks: int
    clipped: int
    calls: tuple[Call, ...]


@runtime_checkable
class WindowProvider(Protocol):
    """A provider that takes a whole window of (never encrypted) messages in one call
    and does the readable filter, the chunking and the map-reduce itself, in its own
    process: the local model, whose worker would otherwise get the window line by line
    while the server's event loop did that work between chat's requests. The outcome
    equals the service's own filter and :func:`..chunking.summarize_all` over it."""

    async def summarize_window(self, rows: Sequence[tuple[int, str, str, str | None]],
                               window: Window) -> WindowSummary: ...
