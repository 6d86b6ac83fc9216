"""Checkpoints (invariant 4) and the log's small readers, called directly: the monotonic
guard, rebuild's unguarded reset, and what the API reads about channels."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest

from eventstore import checkpoint
from eventstore import read as reader
from eventstore.append import write_batch
from eventstore.events import NewEvent


def event(channel: str, provider: str, body: bytes) -> NewEvent:
    return NewEvent(
        channel=channel,
        provider=provider,
        body=body,
        received_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        content_type="application/json",
        headers={},
    ).with_dedup_key(None)


async def test_advance_is_guarded_and_monotonic(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await checkpoint.load(conn, "m") == 0
        async with conn.transaction():
            await checkpoint.advance(conn, "m", 0, 5)
        assert await checkpoint.load(conn, "m") == 5
        # someone else moved it: the stale writer is refused and changes nothing
        with pytest.raises(checkpoint.CheckpointConflict, match="checkpoint 'm' is no longer at 0"):
            async with conn.transaction():
                await checkpoint.advance(conn, "m", 0, 9)
        # never backwards, never in place
        for new in (5, 3):
            with pytest.raises(checkpoint.CheckpointConflict):
                async with conn.transaction():
                    await checkpoint.advance(conn, "m", 5, new)
        assert await checkpoint.load(conn, "m") == 5
        async with conn.transaction():
            await checkpoint.advance(conn, "m", 5, 6)
        assert await checkpoint.load(conn, "m") == 6
        # another name is another reader
        assert await checkpoint.load(conn, "other") == 0
        names = [(n, p) for n, p, _ in await checkpoint.all_checkpoints(conn)]
        assert names == [("m", 6)]


async def test_advance_stamps_updated_at(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        async with conn.transaction():
            await checkpoint.advance(conn, "m", 0, 1)
        ((_, _, first),) = await checkpoint.all_checkpoints(conn)
        await conn.execute("UPDATE checkpoints SET updated_at = updated_at - interval '1 hour'")
        async with conn.transaction():
            await checkpoint.advance(conn, "m", 1, 2)
        ((_, _, second),) = await checkpoint.all_checkpoints(conn)
        assert second >= first


async def test_reset_and_drop(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await checkpoint.reset(conn, "rebuild", 40)
        assert await checkpoint.load(conn, "rebuild") == 40
        await checkpoint.reset(conn, "rebuild", 7)  # unguarded: a swap may move it anywhere
        assert await checkpoint.load(conn, "rebuild") == 7
        await checkpoint.reset(conn, "m", 3)
        ((_, _, before),) = [c for c in await checkpoint.all_checkpoints(conn) if c[0] == "m"]
        await conn.execute("UPDATE checkpoints SET updated_at = updated_at - interval '1 hour'")
        await checkpoint.reset(conn, "m", 4)
        ((_, _, after),) = [c for c in await checkpoint.all_checkpoints(conn) if c[0] == "m"]
        assert after >= before
        await checkpoint.drop(conn, "rebuild")
        assert await checkpoint.load(conn, "rebuild") == 0
        assert [n for n, _, _ in await checkpoint.all_checkpoints(conn)] == ["m"]
        await checkpoint.drop(conn, "never-there")  # dropping nothing is fine


async def test_get_and_the_channel_readers(pool: asyncpg.Pool) -> None:
    assert await reader.get(pool, 1) is None
    assert await reader.head(pool) == 0
    assert await reader.channels(pool) == {}
    assert await reader.channel_provider(pool, "a") is None
    async with pool.acquire() as conn:
        stored = await write_batch(
            conn,
            [
                event("a", "wamm", b"1"),
                event("b", "meta", b"2"),
                event("a", "waha", b"3"),  # the channel's newest event names its provider
            ],
        )
    got = await reader.get(pool, stored[1].position)
    assert got is not None
    assert (got.position, got.channel, got.provider, got.body) == (
        stored[1].position,
        "b",
        "meta",
        b"2",
    )
    assert await reader.get(pool, stored[-1].position + 1) is None
    assert await reader.head(pool) == stored[-1].position == 3
    assert await reader.channels(pool) == {"a": "waha", "b": "meta"}
    assert await reader.channel_provider(pool, "a") == "waha"
    assert await reader.channel_provider(pool, "b") == "meta"
    assert await reader.channel_provider(pool, "c") is None
