"""The ``[video]`` settings: validators and the typed view the service reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynaconf import Validator

from secureconnect import ConfigError


def validators() -> list[Validator]:
    return [
        Validator("video.enabled", is_type_of=bool),
        Validator("video.ring_timeout", is_type_of=(int, float), gt=0, lte=600),
        Validator("video.reconnect_grace", is_type_of=(int, float), gt=0, lte=600),
        Validator("video.heartbeat_interval", is_type_of=(int, float), gt=0, lte=300),
        Validator("video.max_participants", is_type_of=int, gte=2, lte=1000),
        Validator("video.max_call_duration", is_type_of=(int, float), gte=60, lte=7 * 86400),
        Validator("video.max_signal_bytes", is_type_of=int, gte=256, lte=1_000_000),
        Validator("video.stun_urls", is_type_of=list),
        Validator("video.turn_urls", is_type_of=list),
        Validator("video.turn_ttl", is_type_of=int, gte=60, lte=7 * 86400),
        Validator("video.turn_secret", is_type_of=str),
        Validator("video.reaper_interval", is_type_of=(int, float), gte=0.1, lte=86400),
        Validator("video.reaper_batch_size", is_type_of=int, gte=1, lte=100_000),
        Validator("video.membership_cache_ttl", is_type_of=(int, float), gte=0, lte=60),
    ]


@dataclass(frozen=True)
class VideoSettings:
    ring_timeout: float
    reconnect_grace: float
    heartbeat_interval: float
    max_participants: int
    max_call_duration: float
    max_signal_bytes: int
    stun_urls: tuple[str, ...]
    turn_urls: tuple[str, ...]
    turn_ttl: int
    turn_secret: str
    reaper_interval: float
    reaper_batch_size: int
    membership_cache_ttl: float

    @classmethod
    def from_settings(cls, table: Any) -> VideoSettings:
        s = cls(
            ring_timeout=float(table.ring_timeout),
            reconnect_grace=float(table.reconnect_grace),
            heartbeat_interval=float(table.heartbeat_interval),
            max_participants=int(table.max_participants),
            max_call_duration=float(table.max_call_duration),
            max_signal_bytes=int(table.max_signal_bytes),
            stun_urls=tuple(str(u) for u in table.stun_urls),
            turn_urls=tuple(str(u) for u in table.turn_urls),
            turn_ttl=int(table.turn_ttl),
            turn_secret=str(table.turn_secret or ""),
            reaper_interval=float(table.reaper_interval),
            reaper_batch_size=int(table.reaper_batch_size),
            membership_cache_ttl=float(table.membership_cache_ttl),
        )
        if s.heartbeat_interval >= s.reconnect_grace:
            raise ConfigError(
                "video.heartbeat_interval must be shorter than video.reconnect_grace "
                f"(got {s.heartbeat_interval} >= {s.reconnect_grace}): a connected "
                "participant must be seen again before its grace runs out"
            )
        for url in (*s.stun_urls, *s.turn_urls):
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ConfigError(f"video: ICE server URL {url!r} must start with stun(s): "
                                  "or turn(s):")
        if s.turn_urls and not s.turn_secret:
            raise ConfigError(
                "video.turn_urls is set but video.turn_secret is empty; set the TURN "
                "shared secret as a secret (config/.secrets.toml or "
                "SECURECONNECT_VIDEO__TURN_SECRET)"
            )
        return s

    @property
    def stale_after(self) -> float:
        """Seconds without a heartbeat after which a joined participant is gone."""
        return self.reconnect_grace + 2 * self.heartbeat_interval
