"""The channels page: every channel's counts, instance health and latest event."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import msgspec
from aiohttp import web

from eventstore import read as reader
from projections.readmodel import console as rmc
from service.console.pages.common import (
    fmt_ago,
    render,
    request_now,
    request_pool,
)
from service.reads import queries as q
from service.reads.models import ChannelSummary


class Overview(msgspec.Struct, frozen=True, kw_only=True):
    """The channels page's figures, taken together."""

    taken_at: dt.datetime
    channels: list[ChannelSummary]
    health: dict[str, rmc.Health]
    last: dict[str, tuple[int, dt.datetime]]
    since: dict[str, dt.datetime | None]


async def _overview(pool: Any, now: dt.datetime) -> Overview:
    summaries = await q.channels(pool, now)
    since: dict[str, dt.datetime | None] = {
        c.name: c.health.status_since for c in summaries if c.connection is not None
    }
    return Overview(
        taken_at=now,
        channels=summaries,
        health=await rmc.health(pool, now),
        last=await reader.latest_by_channel(pool, [c.name for c in summaries]),
        since=since,
    )


class OverviewCache:
    """The counts behind the channels page pass over every message (like
    ``GET /v1/channels``): they are taken at most once per ``max_age`` seconds per process,
    by one request at a time, however many people look."""

    def __init__(self, max_age: float = 10.0) -> None:
        self.max_age = max_age
        self._value: tuple[float, Overview] | None = None
        self._lock = asyncio.Lock()

    async def get(self, pool: Any, now: dt.datetime) -> Overview:
        async with self._lock:
            if self._value is None or time.monotonic() - self._value[0] > self.max_age:
                self._value = (time.monotonic(), await _overview(pool, now))
            return self._value[1]


OVERVIEW = web.AppKey("console_overview", OverviewCache)


async def channels_page(request: web.Request) -> web.Response:
    now = request_now(request)
    overview = await request.app[OVERVIEW].get(request_pool(request), now)
    return render(
        request,
        "channels.html",
        {
            "channels": overview.channels,
            "health": overview.health,
            "blank": rmc.Health(),
            "last": overview.last,
            "since": overview.since,
            "taken_at": overview.taken_at,
            "max_age": request.app[OVERVIEW].max_age,
            "ago": lambda t: fmt_ago(t, now),
        },
    )
