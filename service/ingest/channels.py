"""Channels on the service side: checked registration, and the hot path's cache.

The SQL is the registry's (``eventstore.channels``); here are the checks that need the
service's knowledge (the providers acklog decodes) or give a clearer refusal than a CHECK
constraint (the name rule, ``NAME_RE``), and the cache that spares ingest a query per webhook.
"""

from __future__ import annotations

import ipaddress
import time

import asyncpg
from aiohttp import web

from eventstore import channels as registry
from eventstore.channels import NAME_RE, Channel, ChannelError, HealthSettings
from projections.providers import PROVIDERS


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ChannelError(
            f"invalid channel name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return name


def check_cidrs(allow_cidrs: list[str] | None) -> None:
    for cidr in allow_cidrs or []:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ChannelError(f"invalid CIDR {cidr!r}") from None


async def add(
    conn: asyncpg.Connection,
    name: str,
    provider: str,
    *,
    token: str | None = None,
    basic_user: str | None = None,
    secrets_: list[str] | None = None,
    allow_cidrs: list[str] | None = None,
    sent_deadline_s: float | None = None,
    delivered_deadline_s: float | None = None,
    health: HealthSettings | None = None,
) -> str:
    """Check, then create a channel; returns its token (printed once, stored hashed)."""
    check_name(name)
    if provider not in PROVIDERS:
        raise ChannelError(f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}")
    check_cidrs(allow_cidrs)
    return await registry.add(
        conn,
        name,
        provider,
        token=token,
        basic_user=basic_user,
        secrets_=secrets_,
        allow_cidrs=allow_cidrs,
        sent_deadline_s=sent_deadline_s,
        delivered_deadline_s=delivered_deadline_s,
        health=health,
    )


async def update(
    conn: asyncpg.Connection,
    name: str,
    *,
    basic_user: str | None = None,
    allow_cidrs: list[str] | None = None,
    sent_deadline_s: float | None = None,
    delivered_deadline_s: float | None = None,
    health: HealthSettings | None = None,
) -> None:
    """Check, then change a channel's settings in place (see ``eventstore.channels.update``)."""
    check_cidrs(allow_cidrs)
    await registry.update(
        conn,
        name,
        basic_user=basic_user,
        allow_cidrs=allow_cidrs,
        sent_deadline_s=sent_deadline_s,
        delivered_deadline_s=delivered_deadline_s,
        health=health,
    )


class ChannelCache:
    """Channel settings for the hot path, re-read at most every ``ttl`` seconds.

    Unknown names are never cached, so a new channel works at once; a removed channel or a
    revoked token stops working within ``ttl``.
    """

    def __init__(self, pool: asyncpg.Pool, ttl: float = 2.0) -> None:
        self._pool = pool
        self._ttl = ttl
        self._items: dict[str, tuple[float, Channel]] = {}

    def peek(self, name: str) -> tuple[Channel | None, bool]:
        """(the cached channel or None, whether it is still fresh), without any query."""
        hit = self._items.get(name)
        if hit is None:
            return None, False
        return hit[1], hit[0] > time.monotonic()

    async def get(self, name: str) -> Channel | None:
        channel, fresh = self.peek(name)
        if fresh:
            return channel
        return await self.refresh(name)

    async def refresh(self, name: str) -> Channel | None:
        """Re-read one channel now, bypassing the cache (after a failed authentication).

        When the read fails the cached entry stays, so an outage does not forget channels."""
        channel = await registry.get(self._pool, name)
        if channel is None:
            self._items.pop(name, None)
        else:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[name] = (time.monotonic() + self._ttl, channel)
        return channel

    def invalidate(self) -> None:
        self._items.clear()


CHANNELS = web.AppKey("channels", ChannelCache)
