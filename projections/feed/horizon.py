"""What retention needs of the feed (projections.retention): the oldest log position whose
feed events a subscription, active or paused, still owes. Dead-lettered events count as
done (the cursor moved past them); replays asked for count as owed."""

from __future__ import annotations

import asyncpg


async def owed_floor(conn: asyncpg.Connection | asyncpg.Pool) -> int | None:
    """The smallest log ``position`` of a feed event past some subscription's cursor (and
    matching its filters) or waiting to be replayed to it; None when nothing is owed."""
    value = await conn.fetchval(
        """SELECT min(p) FROM (
               SELECT (SELECT min(e.position) FROM feed.events e
                       WHERE e.seq > s.cursor
                         AND (cardinality(s.channels) = 0 OR e.channel = ANY(s.channels))
                         AND (cardinality(s.events) = 0 OR e.type = ANY(s.events))) AS p
               FROM feed.subscriptions s
               UNION ALL
               SELECT min(e.position) FROM feed.replays r JOIN feed.events e USING (seq)
           ) owed"""
    )
    return int(value) if value is not None else None
