"""The ``[ai]`` settings: their validators and the typed view the service reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynaconf import Validator

PROVIDERS = ("local", "openai")
#: characters per input token assumed when bounding an OpenAI-compatible request
#: (conservative: English prose averages about 4, JSON-framed chat text less)
CHARS_PER_INPUT_TOKEN = 3
#: characters of every request kept for the instructions and the message framing
INSTRUCTION_RESERVE = 1000


def validators() -> list[Validator]:
    num = (int, float)
    return [
        Validator("ai.enabled", is_type_of=bool),
        Validator("ai.provider", is_in=PROVIDERS),
        Validator("ai.request_timeout", is_type_of=num, gt=0, lte=600),
        Validator("ai.max_concurrent", is_type_of=int, gte=1, lte=1000),
        Validator("ai.queue_timeout", is_type_of=num, gte=0, lte=60),
        Validator("ai.local_executor", is_in=("process", "thread")),
        Validator("ai.local_workers", is_type_of=int, gte=1, lte=64),
        Validator("ai.local_nice", is_type_of=int, gte=0, lte=19),
        Validator("ai.local_sched_idle", is_type_of=bool),
        Validator("ai.local_embedding_cache", is_type_of=int, gte=0, lte=1_000_000),
        Validator("ai.max_queued", is_type_of=int, gte=0, lte=10_000),
        Validator("ai.local_preload", is_type_of=bool),
        Validator("ai.max_messages", is_type_of=int, gte=2, lte=10_000),
        Validator("ai.default_limit", is_type_of=int, gte=1, lte=100_000),
        Validator("ai.max_input_chars", is_type_of=int, gte=500, lte=2_000_000),
        Validator("ai.max_message_chars", is_type_of=int, gte=50, lte=100_000),
        Validator("ai.summary_points", is_type_of=int, gte=1, lte=50),
        Validator("ai.map_concurrency", is_type_of=int, gte=1, lte=32),
        Validator("ai.context_messages", is_type_of=int, gte=1, lte=100),
        Validator("ai.daily_requests", is_type_of=int, gte=1, lte=10_000_000),
        Validator("ai.daily_tokens", is_type_of=int, gte=1, lte=10_000_000_000),
        Validator("ai.audit_retention_days", is_type_of=int, gte=1, lte=3650),
        Validator("ai.prune_interval", is_type_of=num, gte=1, lte=86400),
        Validator("ai.openai_base_url", is_type_of=str, condition=_http_url,
                  messages={"condition": "plugin 'ai': setting `openai_base_url` must be an "
                                         "http(s) URL, got {value!r}"}),
        Validator("ai.openai_model", is_type_of=str, len_min=1, len_max=200),
        Validator("ai.openai_api_key", is_type_of=str),
        Validator("ai.openai_connect_timeout", is_type_of=num, gt=0, lte=120),
        Validator("ai.openai_read_timeout", is_type_of=num, gt=0, lte=600),
        Validator("ai.openai_total_timeout", is_type_of=num, gt=0, lte=600),
        Validator("ai.openai_max_output_tokens", is_type_of=int, gte=16, lte=100_000),
        Validator("ai.openai_max_input_tokens", is_type_of=int, gte=512, lte=10_000_000),
        Validator("ai.openai_retries", is_type_of=int, gte=1, lte=10),
        Validator("ai.openai_temperature", is_type_of=num, gte=0, lte=2),
    ]


def _http_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


@dataclass(frozen=True)
class OpenAISettings:
    base_url: str
    model: str
    api_key: str
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    max_output_tokens: int
    max_input_tokens: int
    retries: int
    temperature: float


@dataclass(frozen=True)
class AiSettings:
    provider: str
    request_timeout: float
    max_concurrent: int
    queue_timeout: float
    max_queued: int
    local_executor: str
    local_workers: int
    local_nice: int
    local_sched_idle: bool
    local_embedding_cache: int
    local_preload: bool
    max_messages: int
    default_limit: int
    max_input_chars: int
    max_message_chars: int
    summary_points: int
    map_concurrency: int
    context_messages: int
    daily_requests: int
    daily_tokens: int
    audit_retention_days: int
    prune_interval: float
    openai: OpenAISettings

    @classmethod
    def from_settings(cls, t: Any) -> AiSettings:
        budget = int(t.max_input_chars)
        if str(t.provider) == "openai":
            # the model's context: instructions + data within openai_max_input_tokens
            budget = min(budget, CHARS_PER_INPUT_TOKEN * int(t.openai_max_input_tokens)
                         - INSTRUCTION_RESERVE)
        return cls(
            provider=str(t.provider),
            request_timeout=float(t.request_timeout),
            max_concurrent=int(t.max_concurrent),
            queue_timeout=float(t.queue_timeout),
            max_queued=int(t.max_queued),
            local_executor=str(t.local_executor),
            local_workers=int(t.local_workers),
            local_nice=int(t.local_nice),
            local_sched_idle=bool(t.local_sched_idle),
            local_embedding_cache=int(t.local_embedding_cache),
            local_preload=bool(t.local_preload),
            max_messages=int(t.max_messages),
            default_limit=min(int(t.default_limit), int(t.max_messages)),
            max_input_chars=budget,
            # a single message always fits a request with room for its framing
            max_message_chars=min(int(t.max_message_chars), budget // 2),
            summary_points=int(t.summary_points),
            map_concurrency=int(t.map_concurrency),
            context_messages=int(t.context_messages),
            daily_requests=int(t.daily_requests),
            daily_tokens=int(t.daily_tokens),
            audit_retention_days=int(t.audit_retention_days),
            prune_interval=float(t.prune_interval),
            openai=OpenAISettings(
                base_url=str(t.openai_base_url).rstrip("/"),
                model=str(t.openai_model),
                api_key=str(t.openai_api_key),
                connect_timeout=float(t.openai_connect_timeout),
                read_timeout=float(t.openai_read_timeout),
                total_timeout=float(t.openai_total_timeout),
                max_output_tokens=int(t.openai_max_output_tokens),
                max_input_tokens=int(t.openai_max_input_tokens),
                retries=int(t.openai_retries),
                temperature=float(t.openai_temperature),
            ),
        )
