"""The operator's pages: the quarantine, the projector's progress, the feed's subscriptions."""

from __future__ import annotations

from aiohttp import web

from eventstore import checkpoint, locks, partitions
from eventstore import read as reader
from eventstore import retention as retention_records
from projections import rebuild, retention
from projections.feed import store as feed_store
from projections.feed import subscriptions as feed_subs
from projections.readmodel import checkpoints as live_checkpoints
from projections.readmodel import console as rmc
from service.console.pages.common import (
    PAGE,
    form_value,
    primary_pool,
    query_url,
    render,
    request_now,
    request_pool,
)
from service.http.errors import BadParameter
from service.reads import params as api_params


async def quarantine_page(request: web.Request) -> web.Response:
    channel = form_value(request.query, "channel")
    if channel is not None and not api_params.channel_name(channel):
        raise BadParameter("channel", "channel must be a channel name")
    before_raw = form_value(request.query, "before")
    before = api_params.parse_int(before_raw, "before", minimum=1) if before_raw else 2**63 - 1
    items, next_before = await rmc.quarantine_newest(request_pool(request), before, PAGE, channel)
    params = {k: v for k, v in request.query.items() if k != "before"}
    return render(
        request,
        "quarantine.html",
        {
            "items": items,
            "form": params,
            "next_url": query_url("/ui/quarantine", params | {"before": next_before})
            if next_before
            else None,
        },
    )


async def projector_page(request: web.Request) -> web.Response:
    pool = request_pool(request)
    now = request_now(request)
    head = await reader.head(pool)
    points = await checkpoint.all_checkpoints(pool)
    n = await checkpoint.recorded_shards(pool)
    at = {p[0]: p for p in points}
    # every shard: its checkpoint (name, position, moved at) and its leader
    shards = [
        (
            at.get(name, (name, 0, None)),
            await locks.holder(primary_pool(request), locks.projector_leader(k, n)),
        )
        for k, name in enumerate(live_checkpoints.names(n))
    ]
    live = min(shards, key=lambda s: s[0][1])[0]
    position = live[1]
    waiting_since = await reader.oldest_after(pool, position)
    leader = shards[0][1]
    last = await rebuild.last_rebuild(pool)
    building = [p for p in points if p[0].startswith("rebuild:")]
    async with pool.acquire() as conn:
        oldest = retention.oldest_of(await partitions.list_partitions(conn, count=False))
    runs = await retention_records.last_runs(pool, 1)
    return render(
        request,
        "projector.html",
        {
            "head": head,
            "position": position,
            "updated_at": live[2],
            "lag_events": max(head - position, 0),
            "lag_seconds": (now - waiting_since).total_seconds() if waiting_since else 0.0,
            "leader": leader,
            "last_rebuild": last,
            "building": building,
            "shards": shards if n > 1 else [],
            "others": [
                p for p in points if not live_checkpoints.is_live(p[0]) and p not in building
            ],
            "oldest": oldest,
            "retention_run": runs[0] if runs else None,
        },
    )


async def feed_page(request: web.Request) -> web.Response:
    """Each subscription: filters, status, backlog, dead letters, recent deliveries."""
    pool = request_pool(request)
    items = []
    for sub in await feed_subs.list_all(pool):
        items.append(
            {
                "sub": sub,
                "backlog": await feed_subs.backlog(pool, sub),
                "dead": len(await feed_subs.dead_letters(pool, subscription=sub.name, limit=1000)),
                "recent": await feed_subs.recent_attempts(pool, sub.id, 20),
            }
        )
    return render(request, "feed.html", {"items": items, "head": await feed_store.last_seq(pool)})
