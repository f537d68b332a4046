"""The video plugin as other plugins and operators see it: its ringing hook, its
settings checks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from secureconnect import ConfigError, hookimpl
from secureconnect.plugins import switches_without
from secureconnect.testing import wait_for

from .helpers import act, conversation, start_call, users


class RingingWatcher:
    """A plugin (as push would be) that learns about ringing through the hook only."""

    PLUGIN_NAME = "ringing_watcher"

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str]]] = []

    @hookimpl(optionalhook=True)
    async def sc_call_ringing(self, kernel: Any, call: dict[str, Any],
                              callee_ids: list[str]) -> None:
        await asyncio.sleep(0)
        self.seen.append((call["id"], sorted(callee_ids)))


async def test_ringing_is_offered_to_other_plugins_through_a_hook(video_client: Any) -> None:
    watcher = RingingWatcher()
    client = await video_client(plugins=[watcher])
    alice, bob, carol = await users(client, 3)
    cid = await conversation(client, alice, [bob, carol])
    call_id = (await start_call(client, alice, cid))["id"]
    await wait_for(lambda: watcher.seen, timeout=3, message="the ringing hook ran")
    assert watcher.seen == [(call_id, sorted([bob.user_id, carol.user_id]))]
    await act(client, bob, call_id, "join")  # joining rings nobody again
    await act(client, alice, call_id, "end")
    assert len(watcher.seen) == 1


@pytest.mark.parametrize("overrides", [
    {"reconnect_grace": 1.0, "heartbeat_interval": 2.0},
    {"turn_urls": ["turn:turn.example.org"], "turn_secret": ""},
    {"stun_urls": ["http://stun.example.org"]},
])
def test_inconsistent_settings_stop_start_up(sc_app: Any, overrides: Any) -> None:
    with pytest.raises(ConfigError, match="video"):
        sc_app({"video": overrides})


@pytest.mark.parametrize(("key", "value"), [
    ("ring_timeout", 0), ("reconnect_grace", "soon"), ("max_participants", 1),
    ("max_signal_bytes", 10), ("turn_ttl", 5), ("stun_urls", "stun:x"),
])
def test_bad_settings_stop_start_up(sc_app: Any, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        sc_app({"video": {key: value}})


def test_chat_disabled_while_video_enabled_stops_start_up(sc_app: Any) -> None:
    # chat off with every other plugin that needs it (whatever is installed), video on
    others = {**switches_without("chat"), "video": True}
    with pytest.raises(ConfigError, match=r"^plugin 'video' requires plugin 'chat'"):
        sc_app({"plugins": others})
    sc_app({"plugins": {**others, "video": False}})
