"""The client address of a request: the peer, or what trusted proxies say it is.

The convention of the ecosystem (nginx ``real_ip_recursive``, uvicorn's
``forwarded_allow_ips``, werkzeug's ``ProxyFix``): ``X-Forwarded-For`` is believed only when
the peer itself is a configured trusted proxy, and then it is walked from the right, where
each trusted proxy appended the address it saw, skipping trusted proxies; the first address
that is not one is the client. Everything to its left was written by the client and is never
read, so a spoofed leftmost entry bypasses neither an allow-list nor the failed-auth limiter.

On the hot path: allow-lists and the limiter key on it. Without trusted proxies it costs one
attribute read; with them, each distinct address is classified once (bounded cache).
"""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

from service.core.config import SETTINGS

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: the header's hops, at most: a longer chain than this is not a real proxy chain
_MAX_HOPS = 32


class TrustedProxies:
    """A set of networks; ``trusts`` answers for one address string, cached per address."""

    def __init__(self, cidrs: tuple[str, ...]) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in cidrs
        )
        self.trusts = functools.lru_cache(maxsize=4096)(self._trusts)

    def _trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)


@functools.cache
def trusted_proxies(cidrs: tuple[str, ...]) -> TrustedProxies:
    return TrustedProxies(cidrs)


def forwarded_client(peer: str, forwarded: list[str], proxies: TrustedProxies) -> str:
    """The client behind trusted ``peer``: the rightmost hop that is not a trusted proxy."""
    hops = [h.strip() for value in forwarded for h in value.split(",")][-_MAX_HOPS:]
    client = peer
    for hop in reversed(hops):
        if not hop:
            continue  # an empty list element ("a, , b"): no address to judge
        if not proxies.trusts(hop):
            return hop[:64]
        client = hop
    return client  # every hop is a trusted proxy: the leftmost of them


def client_address(request: web.Request) -> str:
    peer = request.remote
    cidrs = request.config_dict[SETTINGS].trusted_proxies
    if not peer:
        # A unix socket: only acklog's own relay connects there (its directory is the
        # supervisor's, mode 0700), and the relay appends the peer it saw (``service.http.proxy``).
        # Without this, every relayed client would share one limiter key.
        relayed = request.headers.getall("X-Forwarded-For", [])
        return (
            forwarded_client("unknown", relayed, trusted_proxies(cidrs)) if relayed else "unknown"
        )
    if not cidrs:
        return peer
    proxies = trusted_proxies(cidrs)
    if not proxies.trusts(peer):
        return peer  # a client that talks to us directly: whatever it wrote is its own claim
    return forwarded_client(peer, request.headers.getall("X-Forwarded-For", []), proxies)


def _peer_trusted(request: web.Request) -> bool:
    """The peer may speak for the client: a configured trusted proxy, or (no peer address:
    the unix socket) acklog's own relay."""
    peer = request.remote
    if not peer:
        return True
    cidrs = request.config_dict[SETTINGS].trusted_proxies
    return bool(cidrs) and trusted_proxies(cidrs).trusts(peer)


def client_scheme(request: web.Request) -> str:
    """``https`` or ``http``: what the client used to reach us. A TLS proxy's
    ``X-Forwarded-Proto`` is believed from a trusted proxy only (the rightmost value, the one
    the nearest proxy wrote); otherwise it is this connection's own scheme."""
    if _peer_trusted(request):
        said = request.headers.get("X-Forwarded-Proto", "").rpartition(",")[2].strip().lower()
        if said in ("http", "https"):
            return said
    return "https" if request.secure else "http"
