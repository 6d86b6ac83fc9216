"""The feed under ``/v1`` (behind the API key): subscriptions, dead letters, and
``GET /v1/stream``, the canonical feed as Server-Sent Events (aiohttp-sse).

The stream is resumable: each SSE ``id`` is the event's feed ``seq``; a client that
reconnects with ``Last-Event-ID`` (or ``?after=``) gets every event after it. Without
either it starts at the feed's end. ``channel`` and ``type`` (repeatable) filter. A
heartbeat comment goes out every ``ACKLOG_STREAM_HEARTBEAT`` seconds; a client that does
not take a write within ``ACKLOG_STREAM_SEND_TIMEOUT`` seconds is dropped (nothing is
buffered for it beyond one page of ``PAGE`` events). One LISTEN connection per API process
wakes every stream (:class:`Hub`); a stream also polls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from aiohttp_sse import sse_response

from eventstore.subscribe import Wakeup
from projections.feed import events as fe
from projections.feed import store
from projections.feed import subscriptions as subs
from service.core.config import SETTINGS
from service.core.database import API_POOL, DSN
from service.http.errors import BadParameter, NotFound
from service.http.responses import json_response
from service.http.server import shutting_down
from service.reads import params
from service.reads.models import DeadLetterPage, SubscriptionList, SubscriptionOut

#: events read per query while streaming: what is held for one client at most
PAGE = 100
#: the path that is long-lived: the API's per-request query timeout does not apply to it
STREAM_PATH = "/v1/stream"


class Hub:
    """Wakes every stream of this process when the feed grows (or each poll interval)."""

    def __init__(self, dsn: str, poll_interval: float = 1.0) -> None:
        self.dsn = dsn
        self.poll_interval = poll_interval
        self.changed = asyncio.Condition()

    async def run(self) -> None:
        async with Wakeup(
            self.dsn, channel=store.FEED_CHANNEL, poll_interval=self.poll_interval
        ) as w:
            while True:
                await w.wait(self.poll_interval)
                async with self.changed:
                    self.changed.notify_all()

    async def wait(self) -> None:
        async with self.changed:
            await self.changed.wait()


HUB = web.AppKey("feed_hub", Hub)


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = Hub(app[DSN], app[SETTINGS].stream.poll)
    app[HUB] = hub
    task = asyncio.create_task(hub.run(), name="acklog-feed-hub")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _pool(request: web.Request) -> asyncpg.Pool:
    return request.config_dict[API_POOL]


def _filters(request: web.Request) -> tuple[list[str], list[str]]:
    channels = request.query.getall("channel", [])
    for c in channels:
        if not params.channel_name(c):
            raise BadParameter("channel", f"not a channel name: {c[:60]!r}")
    types = request.query.getall("type", [])
    for t in types:
        if t not in fe.EVENT_TYPES:
            raise BadParameter(
                "type", f"unknown event type {t[:60]!r}; one of {', '.join(fe.EVENT_TYPES)}"
            )
    return channels, types


def _resume_from(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("after")
    if raw is None or raw == "":
        return None
    return params.parse_int(raw, "after")


async def stream(request: web.Request) -> web.StreamResponse:
    channels, types = _filters(request)
    cursor = _resume_from(request)
    pool = _pool(request)
    if cursor is None:
        cursor = await store.last_seq(pool)
    hub = request.config_dict[HUB]
    # a shutdown ends the stream, cleanly between events: the client resumes with
    # Last-Event-ID (the drain never waits for an endless answer)
    stop = asyncio.create_task(shutting_down(request).wait())
    try:
        async with sse_response(
            request,
            ping_interval=request.config_dict[SETTINGS].stream.heartbeat,
            send_timeout=request.config_dict[SETTINGS].stream.send_timeout,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        ) as resp:
            while resp.is_connected() and not stop.done():
                # before the read: no wake-up is missed
                waiting = asyncio.create_task(hub.wait())
                try:
                    rows = await store.after(
                        pool, cursor, channels=channels, types=types, limit=PAGE
                    )
                    for row in rows:
                        try:
                            await resp.send(row.body.decode(), id=str(row.seq), event=row.type)
                        except ConnectionError:  # the client left: nothing to log
                            return resp
                        cursor = row.seq
                    if len(rows) < PAGE:
                        await asyncio.wait((waiting, stop), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiting.cancel()
    finally:
        stop.cancel()
    return resp


async def list_dead_letters(request: web.Request) -> web.Response:
    query = request.query
    name = query.get("subscription")
    after = params.integer(query, "after") or 0
    limit = params.limit(query)
    pool = _pool(request)
    if name is not None:
        try:
            if not params.storable(name):  # a NUL or a lone surrogate names nothing stored
                raise subs.SubscriptionError(f"no subscription named {name[:64]!r}")
            await subs.get(pool, name)
        except subs.SubscriptionError as exc:
            raise NotFound(str(exc), code="unknown_subscription") from None
    items = await subs.dead_letters(
        pool, subscription=name, include_replayed=True, limit=limit + 1, after_id=after
    )
    more = len(items) > limit
    items = items[:limit]
    return json_response(
        DeadLetterPage(items=items, next_after=items[-1].id if more and items else None)
    )


async def list_subscriptions(request: web.Request) -> web.Response:
    pool = _pool(request)
    out = []
    for s in await subs.list_all(pool):
        backlog = await subs.backlog(pool, s)
        out.append(
            SubscriptionOut(
                name=s.name,
                url=s.url,
                channels=s.channels,
                events=s.events,
                status=s.status,
                paused_reason=s.paused_reason,
                cursor=s.cursor,
                backlog=backlog.pending,
                recent=await subs.recent_attempts(pool, s.id, 10),
            )
        )
    return json_response(SubscriptionList(items=out))
