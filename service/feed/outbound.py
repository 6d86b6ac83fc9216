"""Where the feed may send: the operator's allow-list, and a deny-list of private ranges.

A URL whose host is loopback (``localhost``, ``127.0.0.0/8``, ``::1``) may only reach
loopback addresses. Any other URL may reach no private, loopback, link-local (cloud metadata
``169.254.169.254``), shared, multicast or reserved address, unless the operator allows that
range (``ACKLOG_FEED_ALLOW_CIDRS``) or turns the deny-list off (``ACKLOG_FEED_DENY_PRIVATE=0``).

Every address a name resolves to is checked, at ``subscriptions add`` and at each send: the
:class:`GuardedResolver` is the resolver of the delivery's HTTP client, so the addresses
checked are the ones it connects to (no DNS-rebinding gap between check and connect).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

DENIED = tuple(
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
        "64:ff9b::/96",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)


class Refused(OSError):
    """The URL or an address it resolves to is not allowed (never sent to)."""


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    deny_private: bool = True
    allow_cidrs: tuple[str, ...] = ()

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(c, strict=False) for c in self.allow_cidrs]


def _plain(ip: IP) -> IP:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def loopback_host(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return _plain(ipaddress.ip_address(host.strip("[]"))).is_loopback
    except ValueError:
        return False


def check_address(host: str, address: str, policy: Policy) -> None:
    """Raise :class:`Refused` unless ``host`` may be reached at ``address``."""
    ip = _plain(ipaddress.ip_address(address.split("%", 1)[0]))
    if any(ip in n for n in policy.networks()):
        return
    if loopback_host(host):
        if not ip.is_loopback:
            raise Refused(f"{host} is a loopback name but resolves to {ip}")
        return
    if policy.deny_private and any(ip in n for n in DENIED):
        raise Refused(
            f"{host} resolves to {ip}, a private, loopback, link-local or reserved address"
            " (allow it with ACKLOG_FEED_ALLOW_CIDRS)"
        )


def parse(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL, or :class:`Refused`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"not an http(s) URL with a host: {url!r}")
    if parts.username or parts.password:
        raise Refused("credentials in the URL are not allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused(f"bad port in {url!r}") from None
    return parts.hostname, port


def literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
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


def check_literal(url: str, policy: Policy) -> None:
    """At send time: a literal address is checked here (the client resolves no literal);
    a name is checked by :class:`GuardedResolver` as it resolves."""
    host, _ = parse(url)
    if literal(host):
        check_address(host, host, policy)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver that refuses a name if any address it resolves to is refused."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for r in results:
            check_address(host, r["host"], self.policy)
        return results

    async def close(self) -> None:
        await self._inner.close()


def from_env(env: Any) -> Policy:
    raw = env.get("ACKLOG_FEED_ALLOW_CIDRS", "")
    cidrs = tuple(raw.replace(",", " ").split())
    try:
        for c in cidrs:
            ipaddress.ip_network(c, strict=False)
    except ValueError as exc:
        raise SystemExit(f"ACKLOG_FEED_ALLOW_CIDRS: {exc}") from None
    return Policy(
        deny_private=env.get("ACKLOG_FEED_DENY_PRIVATE", "1") not in ("0", "false", "no"),
        allow_cidrs=cidrs,
    )
