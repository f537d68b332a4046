"""SSRF guard for user-supplied URLs (webhook gateways, Web Push endpoints).

Rules (docs/push.md "Webhook gateways"):

* ``http``/``https`` only, a host, no user-info.
* ``allowed`` is a list of host globs (``fnmatch``, case-insensitive, host only, no
  port). An empty list admits any host; otherwise the host must match one.
* Loopback, link-local (169.254/16, fe80::/10, so cloud metadata), private (RFC 1918,
  fc00::/7), unspecified, multicast and reserved addresses are refused unless the
  host matches an entry *other than* the bare ``"*"`` — an operator who runs a gateway
  on 10.0.0.5 lists ``"10.0.0.5"`` (or ``"10.0.0.*"``) explicitly.
* :func:`check_url` runs at registration (literal IPs and ``localhost``);
  :func:`pinned` runs before each send on the addresses the name resolves to, so a
  public name pointing at a private address is refused too, and returns the request
  to make *to the address it checked* (``Host`` and TLS server name kept): a name that
  resolves differently a moment later (DNS rebinding) cannot redirect the call.
  Redirects are never followed by the providers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from urllib.parse import SplitResult, urlsplit, urlunsplit

from secureconnect.errors import Unprocessable


class UnsafeUrl(Unprocessable):
    code = "push_url_not_allowed"


def _matches(host: str, allowed: Sequence[str]) -> tuple[bool, bool]:
    """(admitted by the list, explicitly listed)."""
    if not allowed:
        return True, False
    hits = [p for p in allowed if fnmatchcase(host, p.lower())]
    return bool(hits), any(p != "*" for p in hits)


def _is_internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified
                or ip.is_multicast or ip.is_reserved or not ip.is_global)


def check_url(url: str, allowed: Sequence[str], *, what: str = "URL") -> str:
    """The URL's host, or raise :class:`UnsafeUrl` (422)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl(f"{what} is not a valid URL") from None
    del port
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl(f"{what} must be an http(s) URL with a host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl(f"{what} must not carry credentials")
    host = parts.hostname.lower().rstrip(".")
    admitted, listed = _matches(host, allowed)
    if not admitted:
        raise UnsafeUrl(f"{what} host {host!r} is not in the allowed hosts of this server")
    if listed:
        return host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
            raise UnsafeUrl(f"{what} host {host!r} is internal and not allowed") from None
        return host
    if _is_internal(ip):
        raise UnsafeUrl(f"{what} address {host} is internal (loopback, link-local or "
                        "private) and not allowed")
    return host


@dataclass(frozen=True)
class Target:
    """Where to send: ``url`` (a checked address in place of the name), the ``Host``
    header to send and the TLS ``server_hostname`` (certificate checked for the name)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    server_hostname: str | None = None


async def pinned(url: str, allowed: Sequence[str]) -> Target:
    """The request to make for ``url``, or raise :class:`UnsafeUrl`: a name is resolved
    once, refused when an address is internal (unless the host is explicitly listed),
    and the call goes to the first address."""
    host = check_url(url, allowed)
    try:
        ipaddress.ip_address(host)
        return Target(url)  # a literal was checked by check_url
    except ValueError:
        pass
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise UnsafeUrl(f"host {host!r} does not resolve")
    if not _matches(host, allowed)[1] and any(_is_internal(a) for a in addresses):
        raise UnsafeUrl(f"host {host!r} resolves to an internal address")
    return pin(parts, addresses[0])


def pin(parts: SplitResult, address: ipaddress.IPv4Address | ipaddress.IPv6Address
        ) -> Target:
    """``parts`` with ``address`` in place of its host name; the name goes in ``Host``
    (with the port when the URL has one) and, for https, in the TLS server name."""
    name = str(parts.hostname)
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    host_header = name if parts.port is None else f"{name}:{parts.port}"
    return Target(urlunsplit(parts._replace(netloc=netloc)), {"Host": host_header},
                  name if parts.scheme == "https" else None)
