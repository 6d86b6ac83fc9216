"""A channel's messages (filters, search, keyset pages) and one message's timeline."""

from __future__ import annotations

import msgspec
from aiohttp import web

from eventstore import read as reader
from projections.readmodel import query as rmq
from service.console import picture
from service.console.pages.common import (
    PAGE,
    form_bool,
    form_time,
    form_value,
    message_url,
    query_url,
    render,
    request_now,
    request_pool,
)
from service.http.errors import BadParameter, NotFound
from service.reads import params as api_params
from service.reads import queries as q


async def _channel(request: web.Request) -> tuple[str, str]:
    name = request.match_info["channel"]
    found = await q.channel(request_pool(request), name) if api_params.channel_name(name) else None
    if found is None:
        raise NotFound(f"no channel named {name[:64]!r}")
    return name, found[0]


async def messages_page(request: web.Request) -> web.Response:
    name, provider = await _channel(request)
    query = request.query
    pool = request_pool(request)
    search = form_value(query, "q")
    if search is not None and not api_params.storable(search):
        raise BadParameter("q", "the search text holds characters no message can have")
    after = api_params.decode_cursor({"cursor": c} if (c := form_value(query, "cursor")) else {})
    f = q.MessageFilter(
        channel=name,
        now=request_now(request),
        state=api_params.choice(
            {"state": s} if (s := form_value(query, "state")) else {}, "state", api_params.STATES
        ),
        direction=api_params.choice(
            {"direction": d} if (d := form_value(query, "direction")) else {},
            "direction",
            api_params.DIRECTIONS,
        ),
        overdue=form_bool(query, "overdue"),
        failed=form_bool(query, "failed"),
        since=form_time(query, "since"),
        until=form_time(query, "until"),
        search=search,
        after=after,
        limit=PAGE,
    )
    if f.since is not None and f.until is not None and f.until < f.since:
        raise BadParameter("until", "until must not be before since")
    exact = None
    if rmq.windowed(f):
        if f.after is None:
            f = msgspec.structs.replace(f, after=(await reader.head(pool) + 1, ""))
        if search is not None and after is None:
            async with pool.acquire() as conn:
                exact = await q.message(conn, name, search, f.now)
    items, more = await q.messages(pool, f)
    cursor = None
    scanned_to = None
    if more:
        cursor = api_params.encode_cursor(items[-1].first_position, items[-1].message_id)
    elif rmq.windowed(f):
        floor = rmq.window_floor(f)
        if floor > 1:
            cursor = api_params.encode_cursor(floor - 1, "")
            scanned_to = floor
    params = {k: v for k, v in query.items() if k != "cursor"}
    return render(
        request,
        "messages.html",
        {
            "channel": name,
            "provider": provider,
            "items": items,
            "exact": exact,
            "form": params,
            "states": api_params.STATES,
            "next_url": query_url(request.path, params | {"cursor": cursor}) if cursor else None,
            "first_url": query_url(request.path, params) if after is not None else None,
            "scanned_to": scanned_to,
            "message_url": message_url,
        },
    )


async def message_page(request: web.Request) -> web.Response:
    name, _ = await _channel(request)
    key = request.match_info["message_id"]
    detail = None
    if api_params.storable(key):
        async with request_pool(request).acquire() as conn:
            detail = await q.message(conn, name, key, request_now(request))
    if detail is None:
        raise NotFound(f"channel {name!r} has no message {key[:200]!r}")
    return render(
        request,
        "message.html",
        {"m": detail, "pic": picture.picture(detail), "channel": name},
    )
