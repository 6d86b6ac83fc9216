"""The live read model's checkpoints: one per projection shard, and how many shards there are.

Shard ``k`` of ``n`` (``projections.shards``) advances its own checkpoint, ``messages.k/n``;
with one shard it is ``messages`` (:data:`LIVE_CHECKPOINT`), as it always was, so a
deployment that never set ``ACKLOG_PROJECTOR_SHARDS`` folds on from where it was. The number
of shards is recorded in the database (``projector_shards``): shards started with another
``n`` refuse (:class:`ShardsMismatch`) unless nothing was folded yet, and
``acklog rebuild --shards N`` changes it (:func:`swap_in`). The live models are folded up to
:func:`position`: the least of the shards' checkpoints (each has folded its share of the log
up to its own).
"""

from __future__ import annotations

import asyncpg

from eventstore import checkpoint, locks
from projections.readmodel import LIVE_CHECKPOINT


class ShardsMismatch(RuntimeError):
    """Shard projectors started (or still running) with another number of shards than the
    one the live read model was folded with."""


def name(shard: int, shards: int) -> str:
    """The checkpoint of shard ``shard`` of ``shards``."""
    if not 0 <= shard < shards:
        raise ValueError(f"no shard {shard} of {shards}")
    return LIVE_CHECKPOINT if shards == 1 else f"{LIVE_CHECKPOINT}.{shard}/{shards}"


def names(shards: int) -> list[str]:
    return [name(k, shards) for k in range(shards)]


def is_live(checkpoint_name: str) -> bool:
    """Whether ``checkpoint_name`` is one of the live projection's (any number of shards)."""
    return checkpoint_name == LIVE_CHECKPOINT or checkpoint_name.startswith(f"{LIVE_CHECKPOINT}.")


def mismatch(running: int, recorded: int) -> str:
    """What a projector started with ``running`` shards says when ``recorded`` is on record."""
    return (
        f"the live read model is folded in {recorded} shard(s) but this projector was started"
        f" with ACKLOG_PROJECTOR_SHARDS={running}: set ACKLOG_PROJECTOR_SHARDS={recorded}, or"
        f" change the number with `acklog rebuild --shards {running}` (it refolds the log and"
        f" records the new shards' checkpoints; docs/operations.md, 'Projection shards')"
    )


async def positions(conn: asyncpg.Connection | asyncpg.Pool) -> list[tuple[str, int]]:
    """(checkpoint, position) of every shard of the recorded layout, in shard order."""
    shards = await checkpoint.recorded_shards(conn)
    found = {n: p for n, p, _ in await checkpoint.all_checkpoints(conn) if is_live(n)}
    return [(n, found.get(n, 0)) for n in names(shards)]


async def position(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """How far the live read model has folded the log: every shard has folded up to here."""
    return min(p for _, p in await positions(conn))


async def claim(conn: asyncpg.Connection, shards: int) -> None:
    """At a shard projector's start: check (and, while nothing is folded, record) the layout.

    The recorded number is kept when it equals ``shards``; it is replaced when no checkpoint
    of the recorded layout has moved (a new deployment: the models are empty); otherwise
    :class:`ShardsMismatch` says how to change it.
    """
    async with conn.transaction():
        # exclusive: no batch of any shard is in flight (each read the recorded number under
        # the lock, shared or exclusive) while the number may change
        await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.READ_MODEL_WRITE)
        recorded = await checkpoint.recorded_shards(conn, lock=True)
        if recorded == shards:
            return
        held = {n: p for n, p, _ in await checkpoint.all_checkpoints(conn) if is_live(n)}
        if any(held.values()):
            raise ShardsMismatch(mismatch(shards, recorded))
        for old in held:
            await checkpoint.drop(conn, old)
        await checkpoint.record_shards(conn, shards)


async def swap_in(conn: asyncpg.Connection, position_: int, shards: int | None = None) -> int:
    """A rebuild swapping its models in (in the swap's transaction, under the write lock):
    every shard's checkpoint to ``position_`` (or where it already is, if further), with
    ``shards`` (None: as recorded) recorded and the checkpoints of another layout dropped.
    Returns the number of shards now recorded."""
    recorded = await checkpoint.recorded_shards(conn, lock=True)
    new = recorded if shards is None else shards
    held = {n: p for n, p, _ in await checkpoint.all_checkpoints(conn) if is_live(n)}
    keep = names(new)
    for old in held:
        if old not in keep:
            await checkpoint.drop(conn, old)
    for n in keep:
        await checkpoint.reset(conn, n, max(position_, held.get(n, 0)))
    if new != recorded:
        await checkpoint.record_shards(conn, new)
    return new
