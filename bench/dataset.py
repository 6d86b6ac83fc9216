"""A big log, fast: the webhook mix written straight into ``events`` with COPY.

Rows look exactly like ingest's (same channels, kept headers, dedup keys, duplicate marks);
positions are drawn here, in order, so a constant body can point at its first copy. COPY fires
the statement trigger too, so every chunk takes the append lock like any batch.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import msgspec

from bench.baselines import EVENT_COLUMNS
from bench.db import channel_name
from bench.mix import Mix
from eventstore import partitions
from eventstore.events import body_key
from projections import providers

COLUMNS = ("position", *EVENT_COLUMNS, "duplicate_of")

#: one webhook every millisecond: 1M events span about 17 minutes of "our clock"
SPACING = dt.timedelta(milliseconds=1)
PREFIX = "9"
_json = msgspec.json.Encoder().encode


def _headers(provider: str, content_type: str, size: int) -> dict[str, str]:
    return {
        "host": "127.0.0.1:8080",
        "user-agent": f"{provider}-webhooks/1.0",
        "content-type": content_type,
        "content-length": str(size),
        "accept-encoding": "gzip",
    }


class Filler:
    """Appends the mix to one database's log, remembering the first copy of constant bodies."""

    def __init__(self, dsn: str, mix: Mix | None = None) -> None:
        self.dsn = dsn
        self.mix = mix or Mix()
        self.first_seen: dict[tuple[str, str], int] = {}

    def records(self, count: int, start: int) -> Iterator[tuple[Any, ...]]:
        """``count`` event rows at positions ``start``… (deck slot ``position - 1``)."""
        base = dt.datetime.now(dt.UTC) - SPACING * (start + count)
        headers: dict[str, dict[str, str]] = {}
        for position in range(start, start + count):
            t, body = self.mix.body(position - 1, PREFIX)
            event_id = providers.event_id(t.provider, body)
            dedup = f"id:{event_id}" if event_id else body_key(body)
            channel = channel_name(t.provider)
            duplicate_of = None
            if not t.varied:  # the same bytes every round: a duplicate of the first
                first = self.first_seen.setdefault((channel, dedup), position)
                duplicate_of = first if first != position else None
            hkey = f"{t.provider}/{len(body)}"
            h = headers.get(hkey)
            if h is None:
                h = headers[hkey] = _headers(t.provider, t.content_type, len(body))
            yield (
                position,
                base + SPACING * position,
                channel,
                t.provider,
                t.content_type,
                h,
                body,
                dedup,
                duplicate_of,
            )

    async def fill(self, count: int, *, chunk: int = 50_000) -> dict[str, float]:
        """Append ``count`` more events to the log; returns rows, seconds and rows/s."""
        conn = await asyncpg.connect(self.dsn)
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda v: b"\x01" + _json(v),
            decoder=lambda b: msgspec.json.decode(b[1:]),
            schema="pg_catalog",
            format="binary",
        )
        started = time.perf_counter()
        try:
            head = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
            await partitions.ensure_upto(conn, head + count)  # COPY names its positions
            done = 0
            while done < count:
                n = min(chunk, count - done)
                rows = list(self.records(n, head + done + 1))
                async with conn.transaction():
                    await conn.copy_records_to_table("events", columns=COLUMNS, records=rows)
                done += n
            await conn.execute(
                "SELECT setval('events_position_seq', (SELECT max(position) FROM events))"
            )
            await conn.execute("VACUUM ANALYZE events")
        finally:
            await conn.close()
        seconds = time.perf_counter() - started
        return {"rows": count, "seconds": seconds, "rows_per_s": count / seconds}
