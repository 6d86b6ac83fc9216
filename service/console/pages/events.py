"""Raw events: newest first, the live view and its poll, one event with its decoding."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

import aiohttp_jinja2
import msgspec
from aiohttp import web

from eventstore import read as reader
from eventstore.events import StoredEvent
from projections.facts import describe_fact
from projections.readmodel import console as rmc
from service.console.pages.common import (
    PAGE,
    PROVIDER_NAMES,
    form_bool,
    form_value,
    message_url,
    query_url,
    render,
    request_pool,
)
from service.http.errors import BadParameter, NotFound
from service.reads import params as api_params
from service.reads import queries as q
from service.reads.models import EventOut


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """An event in a list: what it is and what its decoder reads in it."""

    event: StoredEvent
    size: int
    #: the body was too big to read in a list: not decoded here
    cut: bool
    summary: list[str]
    quarantine: str | None
    keys: list[str]


def _row(listed: reader.Listed) -> Row:
    event = listed.event
    if listed.cut:  # a big body is decoded on its own page only
        return Row(
            event=event,
            size=listed.size,
            cut=True,
            summary=[f"{listed.size:,} bytes: open the event to decode it"],
            quarantine=None,
            keys=[],
        )
    decoded = q.decoding(event)
    keys = sorted({k for f in decoded.facts if (k := getattr(f, "key", None))})
    return Row(
        event=event,
        size=listed.size,
        cut=False,
        summary=[describe_fact(f) for f in decoded.facts] or ["no facts"],
        quarantine=decoded.error,
        keys=keys,
    )


async def _rows(events: list[reader.Listed]) -> list[Row]:
    if sum(len(e.event.body) for e in events) <= 256 * 1024:
        return [_row(e) for e in events]
    return await asyncio.to_thread(lambda: [_row(e) for e in events])


def _event_filters(request: web.Request) -> dict[str, Any]:
    query = request.query
    channel = form_value(query, "channel")
    if channel is not None and not api_params.channel_name(channel):
        raise BadParameter("channel", "channel must be a channel name")
    provider = form_value(query, "provider")
    if provider is not None and provider not in PROVIDER_NAMES:
        raise BadParameter("provider", f"provider must be one of {', '.join(PROVIDER_NAMES)}")
    return {
        "channel": channel,
        "provider": provider,
        "duplicate": form_bool(query, "duplicate"),
        "quarantine": form_bool(query, "quarantine"),
    }


async def events_page(request: web.Request) -> web.Response:
    filters = _event_filters(request)
    pool = request_pool(request)
    before_raw = form_value(request.query, "before")
    before = (
        api_params.parse_int(before_raw, "before", minimum=1)
        if before_raw
        else await reader.head(pool) + 1
    )
    next_before: int | None
    if filters["quarantine"]:
        entries, next_before = await rmc.quarantine_newest(pool, before, PAGE, filters["channel"])
        events = await reader.get_many(pool, [e.position for e in entries])
    else:
        events, next_before = await reader.newest(
            pool,
            before=before,
            limit=PAGE,
            channel=filters["channel"],
            provider=filters["provider"],
            duplicate=filters["duplicate"],
        )
    rows = await _rows(events)
    if filters["quarantine"] is False:
        rows = [r for r in rows if r.quarantine is None]
    params = {k: v for k, v in request.query.items() if k != "before"}
    return render(
        request,
        "events.html",
        {
            "rows": rows,
            "form": params,
            "providers": PROVIDER_NAMES,
            "next_url": query_url("/ui/events", params | {"before": next_before})
            if next_before
            else None,
            "first_url": query_url("/ui/events", params) if before_raw else None,
            "short_page": len(events) < PAGE and next_before is not None,
            "message_url": message_url,
            "live": False,
            "head": before - 1,
        },
    )


async def live_page(request: web.Request) -> web.Response:
    filters = _event_filters(request)
    pool = request_pool(request)
    head = await reader.head(pool)
    events = await reader.newer(
        pool, after=max(head - PAGE, 0), limit=PAGE, channel=filters["channel"]
    )
    rows = [r for r in await _rows(events) if _matches(r, filters)]
    rows.reverse()
    return render(
        request,
        "events.html",
        {
            "rows": rows,
            "form": dict(request.query),
            "providers": PROVIDER_NAMES,
            "next_url": None,
            "first_url": None,
            "short_page": False,
            "message_url": message_url,
            "live": True,
            "head": head,
            "rows_url": query_url("/ui/events/rows", {**request.query}),
        },
    )


def _matches(row: Row, filters: Mapping[str, Any]) -> bool:
    e = row.event
    if filters["provider"] is not None and e.provider != filters["provider"]:
        return False
    if filters["duplicate"] is not None and (e.duplicate_of is not None) != filters["duplicate"]:
        return False
    quarantined = row.quarantine is not None
    if filters["quarantine"] is not None and not row.cut and quarantined != filters["quarantine"]:
        return False
    return True


async def event_rows(request: web.Request) -> web.Response:
    """The live view's poll: events after ``after``, as table rows rendered like the page's."""
    filters = _event_filters(request)
    after = api_params.parse_int(request.query.get("after", "0"), "after")
    events = await reader.newer(
        request_pool(request), after=after, limit=PAGE, channel=filters["channel"]
    )
    rows = [r for r in await _rows(events) if _matches(r, filters)]
    rows.reverse()
    html = aiohttp_jinja2.render_string(
        "rows.html", request, {"rows": rows, "message_url": message_url}
    )
    body = json.dumps({"after": events[-1].event.position if events else after, "html": html})
    return web.Response(
        text=body, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


def _pretty(event: EventOut) -> tuple[str | None, list[tuple[str, str]] | None]:
    """The body made readable: indented JSON, or the fields of a form."""
    if event.encoding != "utf-8":
        return None, None
    ctype = (event.content_type or "").lower()
    if "x-www-form-urlencoded" in ctype:
        return None, urllib.parse.parse_qsl(event.body, keep_blank_values=True)
    try:
        parsed = json.loads(event.body)
    except ValueError:
        return None, None
    return json.dumps(parsed, indent=2, ensure_ascii=False), None


async def event_page(request: web.Request) -> web.Response:
    position = api_params.parse_int(request.match_info["position"], "position", minimum=1)
    event = await reader.get(request_pool(request), position)
    if event is None:
        raise NotFound(f"no event at position {position}")
    out = (await q.events_out([event]))[0]
    pretty, form = _pretty(out)
    facts = [
        (describe_fact(f), json.dumps(msgspec.to_builtins(f), indent=2, ensure_ascii=False))
        for f in out.decoded.facts
    ]
    keys = sorted({k for f in out.decoded.facts if (k := getattr(f, "key", None))})
    return render(
        request,
        "event.html",
        {
            "e": out,
            "pretty": pretty,
            "form_fields": form,
            "facts": facts,
            "keys": keys,
            "message_url": message_url,
            "size": len(event.body),
        },
    )
