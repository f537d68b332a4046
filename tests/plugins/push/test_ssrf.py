"""The SSRF guard at send time: a gateway *name* is resolved once, refused when it points
inside, and called at the address that was checked (so a second, different answer —
DNS rebinding — is never used), with its own ``Host``."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

from secureconnect.testing.helpers import wait_for
from secureconnect_plugins.push.urlguard import pin

from ..polls.helpers import make_team
from .fakes import FakeProvider
from .helpers import add_device, metric, send
from .test_delivery import _dead_letters, _outbox_empty


def _loopback_name() -> str:
    """This machine's host name when it resolves to 127.0.0.1 (where the fake listens)."""
    name = socket.gethostname()
    try:
        found = {i[4][0] for i in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    except OSError:
        found = set()
    if found != {"127.0.0.1"}:
        pytest.skip(f"host name {name!r} does not resolve to 127.0.0.1 only ({found})")
    return name


async def test_a_name_resolving_inside_is_refused_at_send(push_client: Any,
                                                          fake: FakeProvider) -> None:
    name = _loopback_name()
    client = await push_client(webhook_allowed_hosts=["*"])
    team = await make_team(client, 1)
    # a name passes registration (it is not resolved there) ...
    await add_device(client, team.members[0], "webhook", f"http://{name}:{fake.port}/hook/n")
    await send(client, team.owner, team.conversation_id)
    # ... but its address is loopback: refused before any call, dead-lettered
    await wait_for(lambda: _dead_letters(client, 1), message="a dead letter")
    await asyncio.sleep(0.2)
    assert fake.received == []
    assert await metric(client, "push_failed_total", provider="webhook",
                        reason="unsafe_url") == 1


async def test_a_listed_name_is_called_at_its_checked_address_with_its_host(
        push_client: Any, fake: FakeProvider) -> None:
    name = _loopback_name()
    client = await push_client(webhook_allowed_hosts=[name])
    team = await make_team(client, 1)
    url = f"http://{name}:{fake.port}/hook/n"
    await add_device(client, team.members[0], "webhook", url)
    await send(client, team.owner, team.conversation_id)
    await wait_for(lambda: len(fake.received) == 1, message="the push")
    await wait_for(lambda: _outbox_empty(client), message="drained")
    rec = fake.received[0]
    assert rec.headers["Host"] == f"{name}:{fake.port}"
    assert rec.json()["notification"]["devices"][0]["pushkey"] == url  # the name, as given


@pytest.mark.parametrize(("url", "address", "want_url", "host", "sni"), [
    ("http://gw.example.com:8080/p?x=1", "203.0.113.7",
     "http://203.0.113.7:8080/p?x=1", "gw.example.com:8080", None),
    ("https://push.example.org/wp/abc", "2001:db8::5",
     "https://[2001:db8::5]/wp/abc", "push.example.org", "push.example.org"),
])
def test_pin_puts_the_address_in_the_url_and_keeps_the_name(
        url: str, address: str, want_url: str, host: str, sni: str | None) -> None:
    target = pin(urlsplit(url), ipaddress.ip_address(address))
    assert target.url == want_url
    assert target.headers == {"Host": host}
    assert target.server_hostname == sni
