"""The ``feed`` process role: the outbox projector and subscription delivery, side by side.

Both lead on advisory locks of their own (``FEED_OUTBOX``, ``FEED_DELIVERY``), so a second
feed process stands by. Nothing here runs in an ingest worker, the API or the projector: a
slow or dead receiver costs this process only (invariant 12).
"""

from __future__ import annotations

import asyncio
from collections import Counter

from projections.feed import events as fe
from projections.feed import store
from projections.feed.outbox import Outbox
from service.core.config import FeedSettings
from service.feed.delivery import Delivery
from service.metrics import registry as metrics


def count_events(events: list[fe.FeedEvent]) -> None:
    for kind, n in Counter(store.type_of(e) for e in events).items():
        metrics.feed_events.labels(kind).inc(n)


async def run(dsn: str, feed: FeedSettings) -> None:
    outbox = Outbox(dsn, on_batch=count_events)
    await asyncio.gather(outbox.run(), Delivery(dsn, feed).run())
