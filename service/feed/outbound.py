"""Where the feed may send: the operator's allow-list, and a deny-list of what an address reaches.

A URL whose host is loopback (``localhost``, ``127.0.0.0/8``, ``::1``) may only reach
loopback addresses. Any other URL may reach no private, loopback, link-local (cloud metadata
``169.254.169.254``), shared, multicast or reserved address, unless the operator allows that
range (``ACKLOG_FEED_ALLOW_CIDRS``) or turns the deny-list off (``ACKLOG_FEED_DENY_PRIVATE=0``).

An address is judged by what it reaches, not by how it is spelt: an IPv6 address that carries
an IPv4 address is refused if the IPv6 address itself OR any IPv4 it carries is denied (and
not allowed). The carriers (:func:`embedded`): IPv4-mapped ``::ffff:0:0/96`` (a dual-stack
socket dials the IPv4), IPv4-compatible ``::/96`` (but ``::`` and ``::1``, which are
themselves), IPv4-translated ``::ffff:0:0:0/96`` (RFC 2765), 6to4 ``2002::/16`` (bits
16-47), NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48`` (last 32 bits; RFC 6052, 8215) and
Teredo ``2001::/32`` (its server, bits 32-63, and its client, the last 32 bits XOR
``0xffffffff``). So ``[::a9fe:a9fe]``, ``[2002:a9fe:a9fe::]`` or ``[64:ff9b::a9fe:a9fe]`` is
refused as ``169.254.169.254`` is, while ``[64:ff9b::808:808]`` (DNS64 for ``8.8.8.8``)
passes. The local-use NAT64 prefix is denied whole (its IPv4 may sit at any RFC 6052
position). An allowed range allows what is in it, not what that carries: allowing
``2002::/16`` does not allow ``2002:a9fe:a9fe::``, allowing ``169.254.0.0/16`` does. A host whose last label is a number must be a dotted quad (``127.0.0.1``, not
``2130706433``, ``0x7f.1`` or ``127.1``); URLs are parsed by yarl, as the HTTP client parses them.

Checked at ``subscriptions add`` / ``update`` (:func:`check_url`) and at each send by the
delivery's HTTP client (:func:`connector`): its :class:`GuardedResolver` checks every
address a name resolves to before any is dialled (so no DNS-rebinding gap), and its socket
factory checks the address of every socket it opens, literal or resolved.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from service.core.config import FeedSettings

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
WHY = "a private, loopback, link-local or reserved address (allow it with ACKLOG_FEED_ALLOW_CIDRS)"

DENIED: tuple[Net, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)

COMPATIBLE = ipaddress.IPv6Network("::/96")
TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


class Refused(OSError):
    """The URL or an address it resolves to is not allowed (never sent to)."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EACCES, reason)  # aiohttp's errors show the strerror

    def __str__(self) -> str:
        return str(self.strerror)


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    deny_private: bool = True
    allow_cidrs: tuple[str, ...] = ()

    @classmethod
    def of(cls, feed: FeedSettings) -> Policy:
        """The operator's rule, from the feed's settings."""
        return cls(deny_private=feed.deny_private, allow_cidrs=feed.allow_cidrs)

    def networks(self) -> list[Net]:
        return [ipaddress.ip_network(c, strict=False) for c in self.allow_cidrs]

    def allows(self, ip: IP) -> bool:
        return any(ip in n for n in self.networks())


def _plain(ip: IP) -> IP:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def embedded(ip: IP) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries (where a socket, translator or tunnel
    may take it); none for an IPv4 address or a plain IPv6 one."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ()
    n = int(ip)
    last = ipaddress.IPv4Address(n & 0xFFFF_FFFF)
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if (ip in COMPATIBLE and n > 1) or ip in TRANSLATED or any(ip in p for p in NAT64):
        found.append(last)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return tuple(found)


def denied(ip: IP, policy: Policy) -> str | None:
    """Why ``ip`` may not be reached (it, or an IPv4 it carries, is denied and not
    allowed), or ``None``."""
    if not policy.deny_private:
        return None
    for reached in (*embedded(ip), ip):  # what it carries first: the clearer reason
        if any(reached in n for n in DENIED) and not policy.allows(reached):
            if reached == ip:
                return f"{ip}, {WHY}"
            return f"{ip}, which carries {reached}, {WHY}"
    return None


def _address(address: str) -> IP:
    return _plain(ipaddress.ip_address(address.split("%", 1)[0]))


def loopback_host(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return _address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_address(host: str, address: str, policy: Policy) -> None:
    """Raise :class:`Refused` unless ``host`` may be reached at ``address``."""
    ip = _address(address)
    if loopback_host(host):
        if ip.is_loopback:
            return
        if not policy.allows(ip):
            raise Refused(f"{host} is a loopback name but resolves to {ip}")
    why = denied(ip, policy)
    if why is not None:
        raise Refused(f"address {why}" if literal(host) else f"{host} resolves to {why}")


def check_dialled(address: str, policy: Policy) -> None:
    """At connect time, whatever the URL: a loopback address was checked against its
    host already (a name by :class:`GuardedResolver`; a literal is what is dialled)."""
    ip = _address(address)
    why = None if ip.is_loopback else denied(ip, policy)
    if why is not None:
        raise Refused(f"not dialled: {why}")


#: the last label of a host that is a number (WHATWG URL: "ends in a number")
NUMBER = re.compile(r"(?:[0-9]+|0x[0-9a-f]*)", re.IGNORECASE)


def parse(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL as aiohttp reads it, or :class:`Refused`."""
    try:
        parts = URL(url)
    except ValueError as exc:
        raise Refused(f"not a valid URL: {exc}") from None
    host = parts.raw_host
    if parts.scheme not in ("http", "https") or not host:
        raise Refused(f"not an http(s) URL with a host: {url!r}")
    if parts.user is not None or parts.password is not None:
        raise Refused("credentials in the URL are not allowed")
    if NUMBER.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]) and not literal(host):
        raise Refused(f"{host} is not an IPv4 address written as four decimal numbers")
    try:
        port = parts.port
    except ValueError:
        raise Refused(f"bad port in {url!r}") from None
    assert port is not None  # http and https have a default port
    return host, port


def literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


async def check_url(url: str, policy: Policy) -> None:
    """Resolve the URL's host and check every address (``subscriptions add`` / ``update``)."""
    host, port = parse(url)
    if literal(host):
        check_address(host, host, policy)
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"cannot resolve {host}: {exc}") from None
    if not infos:
        raise Refused(f"{host} resolves to no address")
    for info in infos:
        check_address(host, str(info[4][0]), policy)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver that refuses a name if any address it resolves to is refused
    (``inner`` answers: the system's resolver unless given)."""

    def __init__(self, policy: Policy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for r in results:
            check_address(host, r["host"], self.policy)
        return results

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket(policy: Policy) -> Callable[[AddrInfoType], socket.socket]:
    """aiohttp's socket factory that opens no socket to a denied address."""

    def make(info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, address = info
        check_dialled(str(address[0]), policy)
        return socket.socket(family, type_, proto)

    return make


def connector(
    policy: Policy, resolver: AbstractResolver | None = None, **options: Any
) -> aiohttp.TCPConnector:
    """An aiohttp connector that resolves through :class:`GuardedResolver` (over
    ``resolver``) and dials through :func:`guarded_socket`."""
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(policy, resolver),
        socket_factory=guarded_socket(policy),
        **options,
    )


def refused(exc: BaseException) -> bool:
    """Whether a client error is this module's refusal (at resolution or at connect)."""
    return isinstance(exc, Refused) or (
        isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, Refused)
    )
