"""Checkpoints: how far a reader has folded the log, written with its read models."""

from __future__ import annotations

import datetime as dt

import asyncpg


class CheckpointConflict(RuntimeError):
    """Another writer advanced this checkpoint first; the caller must roll back."""


async def load(conn: asyncpg.Connection | asyncpg.Pool, name: str) -> int:
    value = await conn.fetchval("SELECT position FROM checkpoints WHERE name = $1", name)
    return int(value or 0)


async def load_guarded(conn: asyncpg.Connection, name: str) -> tuple[int, int]:
    """``name``'s position and the number of live projection shards recorded, in one round
    trip (a live projector checks in each batch that the layout it folds is still the one
    recorded: ``acklog rebuild --shards N`` may have changed it meanwhile)."""
    row = await conn.fetchrow(
        "SELECT (SELECT position FROM checkpoints WHERE name = $1) AS position,"
        " (SELECT shards FROM projector_shards) AS shards",
        name,
    )
    assert row is not None
    return int(row["position"] or 0), int(row["shards"] or 1)


async def recorded_shards(conn: asyncpg.Connection | asyncpg.Pool, *, lock: bool = False) -> int:
    """How many shards the live projection is folded in (``sql/090_projector_shards.sql``);
    ``lock``: the row locked until the caller's transaction ends (whoever changes it)."""
    value = await conn.fetchval(
        "SELECT shards FROM projector_shards" + (" FOR UPDATE" if lock else "")
    )
    return int(value or 1)


async def record_shards(conn: asyncpg.Connection, shards: int) -> None:
    """Record the live projection's number of shards (in the caller's transaction)."""
    await conn.execute(
        "INSERT INTO projector_shards (shards) VALUES ($1)"
        " ON CONFLICT (one) DO UPDATE SET shards = $1, recorded_at = now()",
        shards,
    )


async def advance(conn: asyncpg.Connection, name: str, expected: int, new: int) -> None:
    """Move ``name`` from ``expected`` to ``new`` inside the caller's transaction.

    The guard makes a double application impossible: if anyone moved the checkpoint since we
    read ``expected``, nothing is updated and the whole transaction is rolled back
    (invariant 4).
    """
    await conn.execute(
        "INSERT INTO checkpoints (name, position) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
        name,
    )
    status = await conn.execute(
        "UPDATE checkpoints SET position = $3, updated_at = now()"
        " WHERE name = $1 AND position = $2 AND position < $3",
        name,
        expected,
        new,
    )
    if status != "UPDATE 1":
        raise CheckpointConflict(f"checkpoint {name!r} is no longer at {expected}")


async def reset(conn: asyncpg.Connection, name: str, position: int) -> None:
    """Set ``name`` to ``position`` unguarded: only for a rebuild swapping its models in,
    inside the transaction (and under the write lock) that swaps them."""
    await conn.execute(
        "INSERT INTO checkpoints (name, position) VALUES ($1, $2)"
        " ON CONFLICT (name) DO UPDATE SET position = $2, updated_at = now()",
        name,
        position,
    )


async def drop(conn: asyncpg.Connection, name: str) -> None:
    """Forget a checkpoint (a rebuild's own, once its schema is swapped in or dropped)."""
    await conn.execute("DELETE FROM checkpoints WHERE name = $1", name)


async def all_checkpoints(
    conn: asyncpg.Connection | asyncpg.Pool,
) -> list[tuple[str, int, dt.datetime]]:
    """(name, position, updated_at) of every reader, live and rebuilds in progress."""
    rows = await conn.fetch("SELECT name, position, updated_at FROM checkpoints ORDER BY name")
    return [(r["name"], r["position"], r["updated_at"]) for r in rows]
