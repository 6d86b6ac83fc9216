"""The feed's side of an erasure (docs/erasure.md): every ``feed.*`` row that names the person.

The feed's events are a history already sent to subscribers, not a fold a rebuild redoes
(``store.reset`` keeps them), so an erasure masks them in place, with the outbox's own view
of each message (``feed.messages``: its key and its state document) and the delivery
records whose error text could quote a receiver's answer. ``mask`` is a pure function of bytes
(``projections.phones.Spellings.mask``) that returns its argument when there is nothing to
erase; the masked bytes keep their length and stay JSON, so every event still decodes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import asyncpg
import msgspec

from projections.feed import events as fe
from projections.feed import store

Mask = Callable[[bytes], bytes]

#: rows per page of a scan
PAGE = 1000


async def find_events(
    conn: asyncpg.Connection, mask: Mask, *, after: int = 0
) -> tuple[list[int], int]:
    """Seqs after ``after`` whose body ``mask`` changes, and the last seq scanned (seq order is
    commit order: one leader draws them under its lock)."""
    found: list[int] = []
    last = after
    while True:
        rows = await conn.fetch(
            "SELECT seq, body FROM feed.events WHERE seq > $1 ORDER BY seq LIMIT $2", last, PAGE
        )
        if not rows:
            return found, last
        found += [r["seq"] for r in rows if mask(r["body"]) != r["body"]]
        last = rows[-1]["seq"]


class Masked(msgspec.Struct, frozen=True):
    """A feed event the scrub masked."""

    id: str
    channel: str
    provider: str
    positions: list[int]


async def scrub(
    conn: asyncpg.Connection, mask: Mask, seqs: list[int], *, after: int
) -> tuple[list[Masked], int]:
    """Mask the feed (in the erasure's transaction, ``locks.ERASURE`` held so no outbox batch
    is in flight): the events ``seqs`` and any after ``after``, then every message, instance
    status, attempt, dead letter and paused reason that names the person. Returns the events
    masked and how many other rows changed."""
    later, _ = await find_events(conn, mask, after=after)
    events: list[Masked] = []
    todo = sorted(set(seqs) | set(later))
    for start in range(0, len(todo), PAGE):
        rows = await conn.fetch(
            "SELECT seq, id::text AS id, channel, body FROM feed.events"
            " WHERE seq = ANY($1::bigint[]) ORDER BY seq",
            todo[start : start + PAGE],
        )
        changed = [(r, mask(r["body"])) for r in rows if mask(r["body"]) != r["body"]]
        if changed:
            await conn.executemany(
                "UPDATE feed.events SET body = $2 WHERE seq = $1",
                [(r["seq"], body) for r, body in changed],
            )
            for r, body in changed:
                event = fe.decode(body)
                events.append(Masked(r["id"], r["channel"], event.provider, event.positions))
    rows_changed = await _messages(conn, mask)
    for r in await conn.fetch("SELECT channel, raw FROM feed.instances"):  # one per channel
        raw = mask(r["raw"].encode()).decode()
        if raw != r["raw"]:
            await conn.execute(
                "UPDATE feed.instances SET raw = $2 WHERE channel = $1", r["channel"], raw
            )
            rows_changed += 1
    for table, column in (
        ("feed.attempts", "error"),
        ("feed.dead_letters", "error"),
        ("feed.subscriptions", "paused_reason"),
    ):
        rows_changed += await _texts(conn, mask, table, column)
    return events, rows_changed


async def _messages(conn: asyncpg.Connection, mask: Mask) -> int:
    changed = 0
    last = ("", "")
    while True:
        rows = await conn.fetch(
            "SELECT channel, key, doc FROM feed.messages WHERE (channel, key) > ($1, $2)"
            " ORDER BY channel, key LIMIT $3",
            *last,
            PAGE,
        )
        if not rows:
            return changed
        for r in rows:
            key = mask(r["key"].encode()).decode()
            doc = mask(r["doc"])
            if key != r["key"] or doc != r["doc"]:
                await conn.execute(
                    "UPDATE feed.messages SET key = $3, doc = $4 WHERE channel = $1 AND key = $2",
                    r["channel"],
                    r["key"],
                    key,
                    doc,
                )
                changed += 1
        last = (rows[-1]["channel"], rows[-1]["key"])


async def _texts(conn: asyncpg.Connection, mask: Mask, table: str, column: str) -> int:
    changed = 0
    last = 0
    while True:
        rows = await conn.fetch(
            f"SELECT id, {column} AS text FROM {table} WHERE id > $1 AND {column} IS NOT NULL"
            " ORDER BY id LIMIT $2",
            last,
            PAGE,
        )
        if not rows:
            return changed
        updates = [
            (r["id"], mask(r["text"].encode()).decode())
            for r in rows
            if mask(r["text"].encode()) != r["text"].encode()
        ]
        if updates:
            await conn.executemany(f"UPDATE {table} SET {column} = $2 WHERE id = $1", updates)
            changed += len(updates)
        last = rows[-1]["id"]


async def announce(
    conn: asyncpg.Connection,
    erasure: int,
    log: dict[str, tuple[str, list[int]]],
    masked: list[Masked],
    now: dt.datetime,
) -> int:
    """One ``subject.erased`` feed event per channel the erasure touched (``log``: channel →
    its provider and the log positions masked; ``masked``: the feed events), so subscribers
    erase it too; returns how many. Written in the erasure's transaction, ``locks.ERASURE``
    held: no outbox batch draws a seq meanwhile."""
    channels: dict[str, tuple[str, set[int], list[str]]] = {
        c: (provider, set(positions), []) for c, (provider, positions) in log.items()
    }
    for m in masked:
        _, positions, ids = channels.setdefault(m.channel, (m.provider, set(), []))
        positions.update(m.positions)
        ids.append(m.id)
    notices: list[fe.FeedEvent] = [
        fe.SubjectErased(
            id=fe.event_id("subject.erased", erasure, channel),
            timestamp=now,
            channel=channel,
            provider=provider,
            positions=sorted(positions),
            erasure=erasure,
            masked=ids,
        )
        for channel, (provider, positions, ids) in sorted(channels.items())
        if positions
    ]
    if notices:
        await store.write(conn, notices, {}, {}, {})
    return len(notices)
