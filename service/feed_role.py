"""The ``feed`` process role: the outbox projector and subscription delivery, side by side.

Both lead on advisory locks of their own (``FEED_OUTBOX``, ``FEED_DELIVERY``), so a second
feed process stands by. Nothing here runs in an ingest worker, the API or the projector: a
slow or dead receiver costs this process only (invariant 12).
"""

from __future__ import annotations

import asyncio

from projections.feed.outbox import Outbox


async def run(dsn: str) -> None:
    outbox = Outbox(dsn)
    await asyncio.gather(outbox.run())
