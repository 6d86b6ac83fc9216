"""Rebuild the read models from the log without taking the read side down (invariant 9).

A rebuild folds the whole log into a fresh schema while the live projector and the query
side carry on, then, holding the live write lock, folds the last few events and swaps the
schemas in one transaction: readers see the old models or the new ones, never a half-built
table. ``verify`` folds aside up to exactly the live checkpoint and compares.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable

import asyncpg
import msgspec

from eventstore import checkpoint, locks
from eventstore.pool import connect
from eventstore.read import head
from projections import store
from projections.runner import LIVE_CHECKPOINT, Clock, Projector, utcnow

#: every read-model table, with the columns that identify a row (for diff reports)
TABLES: dict[str, tuple[str, ...]] = {
    "messages": ("channel", "key"),
    "timeline": ("channel", "key", "position", "seq"),
    "receipts": ("channel", "key", "participant"),
    "instance_status": ("channel",),
    "instance_history": ("channel", "position", "seq"),
    "quarantine": ("position",),
    "missed_counts": ("channel", "stage"),
}


class Progress(msgspec.Struct, frozen=True):
    done: int
    total: int
    rate: float
    eta_seconds: float | None


class Difference(msgspec.Struct, frozen=True):
    table: str
    only_live: int
    only_rebuilt: int
    examples: list[str]


class RebuildBusy(RuntimeError):
    """Another rebuild or verify holds the lock."""


ProgressFn = Callable[[Progress], None]


async def _build_aside(
    conn: asyncpg.Connection,
    dsn: str,
    clock: Clock,
    progress: ProgressFn | None,
    *,
    upto: int | None = None,
) -> Projector:
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", locks.REBUILD):
        raise RebuildBusy("another rebuild or verify is running")
    schema = f"rm_build_{int(time.time())}_{os.getpid()}"
    await conn.execute("SELECT create_read_models($1)", schema)
    builder = Projector(
        dsn, schema=schema, name=f"rebuild:{schema}", live=False, clock=clock, batch_size=2000
    )
    total = upto if upto is not None else await head(conn)
    started = time.monotonic()
    done = 0
    while n := await builder.step(conn, upto=upto):
        done += n
        if progress is not None:
            elapsed = max(time.monotonic() - started, 1e-6)
            rate = done / elapsed
            left = max(total - builder.position, 0)
            progress(Progress(done, done + left, rate, left / rate if rate else None))
    return builder


async def _drop(conn: asyncpg.Connection, builder: Projector) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {builder.schema} CASCADE")
    await conn.execute("DELETE FROM checkpoints WHERE name = $1", builder.name)


async def rebuild(dsn: str, *, clock: Clock = utcnow, progress: ProgressFn | None = None) -> int:
    """Replay the log into fresh tables and swap them in; returns the events folded."""
    conn = await connect(dsn)
    builder: Projector | None = None
    try:
        builder = await _build_aside(conn, dsn, clock, progress)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.READ_MODEL_WRITE)
            await builder.catch_up(conn)  # the tail that arrived meanwhile
            await store.sweep(conn, builder.schema, clock())
            live = await checkpoint.load(conn, LIVE_CHECKPOINT)
            await conn.execute(
                "INSERT INTO checkpoints (name, position) VALUES ($1, $2)"
                " ON CONFLICT (name) DO UPDATE SET position = $2, updated_at = now()",
                LIVE_CHECKPOINT,
                max(builder.position, live),
            )
            old = f"rm_old_{int(time.time())}_{os.getpid()}"
            await conn.execute(f"ALTER SCHEMA {store.LIVE} RENAME TO {old}")
            await conn.execute(f"ALTER SCHEMA {builder.schema} RENAME TO {store.LIVE}")
            await conn.execute(f"DROP SCHEMA {old} CASCADE")
            await conn.execute("DELETE FROM checkpoints WHERE name = $1", builder.name)
        builder = None
        return await head(conn)
    finally:
        if builder is not None:
            await _drop(conn, builder)
        await conn.close()


async def verify(
    dsn: str, *, clock: Clock = utcnow, progress: ProgressFn | None = None
) -> list[Difference]:
    """Rebuild aside up to the live checkpoint and list every table that differs."""
    conn = await connect(dsn)
    builder: Projector | None = None
    try:
        # fold aside no further than the live projector has, so both can meet at its position
        live_at_start = await checkpoint.load(conn, LIVE_CHECKPOINT)
        builder = await _build_aside(conn, dsn, clock, progress, upto=live_at_start)
        diffs: list[Difference] = []
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.READ_MODEL_WRITE)
            live = await checkpoint.load(conn, LIVE_CHECKPOINT)
            await builder.catch_up(conn, upto=live)
            now: dt.datetime = clock()
            await store.sweep(conn, store.LIVE, now)  # same clock for both sides
            await store.sweep(conn, builder.schema, now)
            for table, ident in TABLES.items():
                diffs.extend(await _compare(conn, table, ident, builder.schema))
        finally:
            await tx.rollback()  # verify changes nothing live, not even the sweep
        return diffs
    finally:
        if builder is not None:
            await _drop(conn, builder)
        await conn.close()


async def _compare(
    conn: asyncpg.Connection, table: str, ident: tuple[str, ...], other: str
) -> list[Difference]:
    live, rebuilt = f"{store.LIVE}.{table}", f"{store.schema_name(other)}.{table}"
    cols = ", ".join(ident)
    only_live = await conn.fetch(
        f"SELECT {cols} FROM (TABLE {live} EXCEPT ALL TABLE {rebuilt}) d ORDER BY {cols} LIMIT 5"
    )
    n_live = await conn.fetchval(
        f"SELECT count(*) FROM (TABLE {live} EXCEPT ALL TABLE {rebuilt}) d"
    )
    n_rebuilt = await conn.fetchval(
        f"SELECT count(*) FROM (TABLE {rebuilt} EXCEPT ALL TABLE {live}) d"
    )
    if not n_live and not n_rebuilt:
        return []
    examples = [" ".join(str(v) for v in r.values()) for r in only_live]
    return [Difference(table, n_live, n_rebuilt, examples)]
