"""The query API under ``/v1``: channels, message timelines, raw events, quarantine.

It is a sub-application so its middleware (API key, 400/503 mapping, query timeout) guards
only ``/v1``; ingest, health and ``/openapi.json`` stay outside. Handlers read the read models
and the log through ``service.reads.queries`` (which maps ``projections.readmodel.query``
records) and answer with the Structs of ``service.reads.models``, which also generate the
OpenAPI document. Errors are ``service.http.errors``' and answered by its mapping.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from eventstore import read as reader
from service.api import erasures, openapi
from service.api import feed as feed_api
from service.core.apikey import API_KEY, ApiKey
from service.core.config import CLOCK, SETTINGS
from service.core.database import API_POOL, API_PRIMARY
from service.http import errors
from service.http.clientaddr import client_address
from service.http.errors import BadParameter, Gone, NotFound
from service.http.limiter import KEY_FAILURES
from service.http.responses import error, json_response, within
from service.reads import params
from service.reads import queries as q
from service.reads.models import (
    ChannelList,
    ChannelStatus,
    EventPage,
    MessagePage,
    QuarantinePage,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: bodies per /v1/events page (at least one event): a page's size is bounded whatever is stored
PAGE_BODY_BYTES = 1024 * 1024


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
    api_key = request.app[API_KEY]
    # keys are read on the primary: a standby (ACKLOG_API_DATABASE_URL) may lag a revocation
    key_name = await api_key.check(
        request.headers.get("Authorization"), request.config_dict[API_PRIMARY]
    )
    if key_name is None:
        limiter.failed(client)
        return error(
            401,
            "unauthorized",
            "send the API key as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="acklog"'},
        )
    request[erasures.KEY_NAME] = key_name
    # a stream lives as long as its client; each of its queries is short; an erasure
    # rebuilds the read models
    timeout = (
        None
        if request.path in (feed_api.STREAM_PATH, "/v1" + erasures.PATH)
        else request.config_dict[SETTINGS].api_query_timeout
    )
    try:
        return await within(timeout, errors.at_store_boundary(handler), request)
    except errors.MAPPED as exc:
        if isinstance(exc, errors.UNAVAILABLE):
            log.warning("query API: database unavailable: %s", exc)
        return errors.answer(exc)


def _pool(request: web.Request) -> Any:
    return request.config_dict[API_POOL]


async def _channel(request: web.Request) -> tuple[str, str, bool]:
    """(name, provider, registered) of the path's channel, or 404."""
    name = request.match_info["channel"]
    found = await q.channel(_pool(request), name) if params.channel_name(name) else None
    if found is None:
        raise NotFound(f"no channel named {name[:64]!r}", code="unknown_channel")
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
        raise NotFound(f"channel {name!r} has no message {key[:200]!r}", code="unknown_message")
    return json_response(detail)


async def list_events(request: web.Request) -> web.Response:
    query = request.query
    channel = params.channel_filter(query)
    after = params.integer(query, "after") or 0
    limit = params.limit(query, maximum=params.MAX_EVENT_LIMIT)
    pool = _pool(request)
    if channel is not None and await q.channel(pool, channel) is None:
        raise NotFound(f"no channel named {channel!r}", code="unknown_channel")
    if after:  # the event after the last one read: gone when retention dropped it
        await _not_dropped(pool, after + 1)
    events, more = await reader.read_page(
        pool, after=after, limit=limit, max_bytes=PAGE_BODY_BYTES, channel=channel
    )
    items = await q.events_out(events)
    next_after = items[-1].position if more else None
    return json_response(EventPage(items=items, next_after=next_after))


async def event_detail(request: web.Request) -> web.Response:
    position = params.parse_int(request.match_info["position"], "position", minimum=1)
    event = await reader.get(_pool(request), position)
    if event is None:
        await _not_dropped(_pool(request), position)
        raise NotFound(f"no event at position {position}", code="unknown_event")
    return json_response((await q.events_out([event]))[0])


async def _not_dropped(pool: Any, position: int) -> None:
    """410 naming the archive when retention took ``position`` out of the log."""
    gone = await q.dropped(pool, position)
    if gone is not None:
        oldest, archive, url = gone
        raise Gone(position, oldest, archive, url)


async def log_status(request: web.Request) -> web.Response:
    return json_response(await q.log_status(_pool(request)))


async def list_quarantine(request: web.Request) -> web.Response:
    query = request.query
    channel = params.channel_filter(query)
    after = params.integer(query, "after") or 0
    limit = params.limit(query)
    pool = _pool(request)
    if channel is not None and await q.channel(pool, channel) is None:
        raise NotFound(f"no channel named {channel!r}", code="unknown_channel")
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
    ("/log", log_status),
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
    # the stream is documented by hand (text/event-stream, see service.api.openapi)
    stream_params = frozenset(p.name for p in openapi.STREAM_PARAMETERS)
    api.router.add_get("/stream", _strict(feed_api.stream, stream_params), allow_head=False)
    api.router.add_post(erasures.PATH, _strict(erasures.create, frozenset()))
    return api
