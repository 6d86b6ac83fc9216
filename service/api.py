"""The query API under ``/v1``: channels, message timelines, raw events, quarantine.

It is a sub-application so its middleware (API key, 400/503 mapping, query timeout) guards
only ``/v1``; ingest, health and ``/openapi.json`` stay outside. Handlers read the read models
and the log through ``service.api_queries`` (which maps ``projections.readmodel.query`` records) and answer with the Structs of
``service.api_models``, which also generate the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from eventstore import read as reader
from eventstore.errors import DRIVER_ERRORS, StoreUnavailable
from eventstore.events import StoredEvent
from projections.fold import decode_event
from service import api_params as params
from service import api_queries as q
from service import feed_api, openapi
from service.api_models import (
    ChannelList,
    ChannelStatus,
    Decoding,
    EventOut,
    EventPage,
    MessagePage,
    QuarantinePage,
)
from service.api_params import BadParameter
from service.apikey import ApiKey
from service.clientaddr import client_address
from service.responses import error, json_response, within
from service.state import API_KEY, API_POOL, CLOCK, KEY_FAILURES, SETTINGS

log = logging.getLogger(__name__)

#: database trouble: answered 503, never 500
_UNAVAILABLE: tuple[type[BaseException], ...] = (*DRIVER_ERRORS, StoreUnavailable)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: bodies per /v1/events page (at least one event): a page's size is bounded whatever is stored
PAGE_BODY_BYTES = 1024 * 1024

#: decode in a worker thread past this many body bytes, so big pages never stall ingest
_INLINE_DECODE_BYTES = 256 * 1024


class NotFound(Exception):
    """An unknown channel, message or event: answered 404 with a code that says which."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """API key first (an address sending wrong keys is slowed down, whatever it sends next:
    the count is shared with the console's sign-in); then client mistakes → 400/404, database
    trouble → 503 (never 500)."""
    limiter = request.config_dict[KEY_FAILURES]
    client = client_address(request)
    wait = limiter.blocked_for(client)
    if wait:
        return error(
            429,
            "too_many_requests",
            "too many wrong API keys from this address; wait, then retry",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    if not request.app[API_KEY].check(request.headers.get("Authorization")):
        limiter.failed(client)
        return error(
            401,
            "unauthorized",
            "send the API key as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="acklog"'},
        )
    # a stream lives as long as its client; each of its queries is short
    timeout = (
        None
        if request.path == feed_api.STREAM_PATH
        else request.config_dict[SETTINGS].api_query_timeout
    )
    try:
        return await within(timeout, handler, request)
    except BadParameter as exc:
        return error(400, "bad_request", exc.detail, parameter=exc.parameter)
    except NotFound as exc:
        return error(404, exc.code, exc.detail)
    except _UNAVAILABLE as exc:
        log.warning("query API: database unavailable: %s", exc)
        return error(
            503,
            "unavailable",
            "the database did not answer; retry later",
            headers={"Retry-After": "5"},
        )


def _pool(request: web.Request) -> Any:
    return request.config_dict[API_POOL]


async def _channel(request: web.Request) -> tuple[str, str, bool]:
    """(name, provider, registered) of the path's channel, or 404."""
    name = request.match_info["channel"]
    found = await q.channel(_pool(request), name) if params.channel_name(name) else None
    if found is None:
        raise NotFound("unknown_channel", f"no channel named {name[:64]!r}")
    return name, found[0], found[1]


async def list_channels(request: web.Request) -> web.Response:
    now = request.config_dict[CLOCK]()
    return json_response(ChannelList(items=await q.channels(_pool(request), now)))


async def channel_status(request: web.Request) -> web.Response:
    limit = params.limit(request.query)
    name, provider, registered = await _channel(request)
    current, history = await q.instance_status(_pool(request), name, limit)
    healths = await q.health(_pool(request), request.config_dict[CLOCK]())
    return json_response(
        ChannelStatus(
            channel=name,
            provider=provider,
            registered=registered,
            current=current,
            health=q.health_out(name, healths),
            history=history,
        )
    )


async def list_messages(request: web.Request) -> web.Response:
    query = request.query
    f = q.MessageFilter(
        channel=request.match_info["channel"],
        now=request.config_dict[CLOCK](),
        state=params.choice(query, "state", params.STATES),
        direction=params.choice(query, "direction", params.DIRECTIONS),
        overdue=params.boolean(query, "overdue"),
        anomaly=params.choice(query, "anomaly", params.ANOMALIES),
        failure_class=params.choice(query, "failure_class", params.FAILURE_CLASS_VALUES),
        origin=params.choice(query, "origin", params.ORIGINS),
        since=params.timestamp(query, "since"),
        until=params.timestamp(query, "until"),
        after=params.decode_cursor(query),
        limit=params.limit(query),
    )
    if f.since is not None and f.until is not None and f.until < f.since:
        raise BadParameter("until", "until must not be before since")
    await _channel(request)
    items, more = await q.messages(_pool(request), f)
    cursor = params.encode_cursor(items[-1].first_position, items[-1].message_id) if more else None
    return json_response(MessagePage(items=items, next_cursor=cursor))


async def message_detail(request: web.Request) -> web.Response:
    name, _, _ = await _channel(request)
    key = request.match_info["message_id"]
    detail = None
    if params.storable(key):
        async with _pool(request).acquire() as conn:
            detail = await q.message(conn, name, key, request.config_dict[CLOCK]())
    if detail is None:
        raise NotFound("unknown_message", f"channel {name!r} has no message {key[:200]!r}")
    return json_response(detail)


def _decoding(event: StoredEvent) -> Decoding:
    d = decode_event(event)
    return Decoding(ok=d.error is None, facts=d.facts, error=d.error)


def _event_out(event: StoredEvent) -> EventOut:
    try:
        body, encoding = event.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(event.body).decode("ascii"), "base64"
    return EventOut(
        position=event.position,
        received_at=event.received_at,
        channel=event.channel,
        provider=event.provider,
        content_type=event.content_type,
        headers=event.headers or {},
        encoding="utf-8" if encoding == "utf-8" else "base64",
        body=body,
        dedup_key=event.dedup_key,
        duplicate_of=event.duplicate_of,
        decoded=_decoding(event),
    )


async def _events_out(events: list[StoredEvent]) -> list[EventOut]:
    """Decoders are pure and CPU-bound: big pages decode in a thread."""
    if sum(len(e.body) for e in events) <= _INLINE_DECODE_BYTES:
        return [_event_out(e) for e in events]
    return await asyncio.to_thread(lambda: [_event_out(e) for e in events])


async def list_events(request: web.Request) -> web.Response:
    query = request.query
    channel = params.channel_filter(query)
    after = params.integer(query, "after") or 0
    limit = params.limit(query, maximum=params.MAX_EVENT_LIMIT)
    pool = _pool(request)
    if channel is not None and await q.channel(pool, channel) is None:
        raise NotFound("unknown_channel", f"no channel named {channel!r}")
    events, more = await reader.read_page(
        pool, after=after, limit=limit, max_bytes=PAGE_BODY_BYTES, channel=channel
    )
    items = await _events_out(events)
    next_after = items[-1].position if more else None
    return json_response(EventPage(items=items, next_after=next_after))


async def event_detail(request: web.Request) -> web.Response:
    position = params.parse_int(request.match_info["position"], "position", minimum=1)
    event = await reader.get(_pool(request), position)
    if event is None:
        raise NotFound("unknown_event", f"no event at position {position}")
    return json_response((await _events_out([event]))[0])


async def list_quarantine(request: web.Request) -> web.Response:
    query = request.query
    channel = params.channel_filter(query)
    after = params.integer(query, "after") or 0
    limit = params.limit(query)
    pool = _pool(request)
    if channel is not None and await q.channel(pool, channel) is None:
        raise NotFound("unknown_channel", f"no channel named {channel!r}")
    items, more = await q.quarantine(pool, after, limit, channel)
    next_after = items[-1].position if more else None
    return json_response(QuarantinePage(items=items, next_after=next_after))


def _strict(handler: Handler, allowed: frozenset[str]) -> Handler:
    """Unknown query parameters are refused, so a typo (``?stat=read``) never silently
    returns everything."""

    async def checked(request: web.Request) -> web.StreamResponse:
        for name in request.query:
            if name not in allowed:
                raise BadParameter(
                    name,
                    f"unknown parameter {name[:40]!r}; this endpoint takes"
                    f" {', '.join(sorted(allowed)) or 'no query parameters'}",
                )
        return await handler(request)

    return checked


ROUTES: tuple[tuple[str, Handler], ...] = (
    ("/channels", list_channels),
    ("/channels/{channel}/status", channel_status),
    ("/channels/{channel}/messages", list_messages),
    ("/channels/{channel}/messages/{message_id:.+}", message_detail),
    ("/events", list_events),
    ("/events/{position}", event_detail),
    ("/quarantine", list_quarantine),
    ("/feed/subscriptions", feed_api.list_subscriptions),
    ("/feed/dead-letters", feed_api.list_dead_letters),
)


def make_api(app: web.Application) -> web.Application:
    """The ``/v1`` sub-application; the parent app holds the pool, clock and settings."""
    api = web.Application(middlewares=[guard])
    api[API_KEY] = ApiKey(app[SETTINGS])
    for path, handler in ROUTES:
        allowed = openapi.query_parameters("/v1" + path.replace(":.+", ""))
        api.router.add_get(path, _strict(handler, allowed), allow_head=False)
    # the stream is documented by hand (text/event-stream, see service.openapi)
    stream_params = frozenset(p.name for p in openapi.STREAM_PARAMETERS)
    api.router.add_get("/stream", _strict(feed_api.stream, stream_params), allow_head=False)
    return api
