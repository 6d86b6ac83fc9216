"""Schema-level work on read-model copies: create one aside, swap it live, drop, compare.

A rebuild folds into a fresh schema (``rm_build_*``) made by ``create_read_models()`` of
``sql/003_read_models.sql``, then swaps it with ``rm`` in one transaction (invariant 9).
"""

from __future__ import annotations

import os
import time

import asyncpg
import msgspec

from projections.readmodel import LIVE, schema_name
from projections.readmodel.columns import TABLES


class Difference(msgspec.Struct, frozen=True):
    table: str
    only_live: int
    only_rebuilt: int
    examples: list[str]


def fresh_name(prefix: str = "build") -> str:
    return schema_name(f"rm_{prefix}_{int(time.time())}_{os.getpid()}")


async def create(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute("SELECT create_read_models($1)", schema_name(schema))


async def drop(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {schema_name(schema)} CASCADE")


async def leftovers(conn: asyncpg.Connection) -> list[str]:
    """Copies a rebuild or verify that died left behind (``rm_build_*``, ``rm_old_*``): only
    call this while holding ``locks.REBUILD``, when no rebuild is running."""
    rows = await conn.fetch(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'rm\\_%' ORDER BY nspname"
    )
    return [r["nspname"] for r in rows]


async def swap_in(conn: asyncpg.Connection, schema: str) -> None:
    """Make ``schema`` the live read model and drop the old one (caller's transaction)."""
    old = fresh_name("old")
    await conn.execute(f"ALTER SCHEMA {LIVE} RENAME TO {old}")
    await conn.execute(f"ALTER SCHEMA {schema_name(schema)} RENAME TO {LIVE}")
    await conn.execute(f"DROP SCHEMA {old} CASCADE")


#: how a table is narrowed to what a log starting at ``floor`` can rebuild (``verify`` after
#: retention): messages whose every event is at or after it (their timelines and receipts
#: with them),
#: reports at or after it; None: an aggregate over the whole log, not comparable then
_WHOLE = (
    "(channel, key) IN (SELECT m.channel, m.key FROM {live}.messages m"
    " WHERE least(m.first_position, m.last_position) >= $1 AND NOT EXISTS"
    " (SELECT 1 FROM {live}.timeline t"
    "  WHERE t.channel = m.channel AND t.key = m.key AND t.position < $1))"
)
_SINCE: dict[str, str | None] = {
    "messages": _WHOLE,
    "timeline": _WHOLE,
    "receipts": _WHOLE,
    "instance_status": "position >= $1",
    "instance_history": "position >= $1",
    "quarantine": "position >= $1",
    "missed_counts": None,
    "anomaly_counts": None,
    "failure_counts": None,
    "channel_activity": None,
}


async def compare(conn: asyncpg.Connection, other: str, floor: int = 1) -> list[Difference]:
    """Every table of ``other`` that differs from the live one, with a few example keys.

    ``floor`` > 1: the log starts there (retention dropped what lay below), so only what a
    fold from ``floor`` can rebuild is compared: messages all of whose events lie at or after
    it (by the
    live model's positions and timeline) with their timelines and receipts, connection reports
    and quarantined events at or after it. The counters, folded over the whole log, are
    skipped."""
    diffs: list[Difference] = []
    for table in TABLES:
        live, rebuilt = f"{LIVE}.{table.name}", f"{schema_name(other)}.{table.name}"
        args: list[object] = []
        if floor > 1:
            since = _SINCE[table.name]
            if since is None:
                continue
            where = " WHERE " + since.format(live=LIVE)
            args = [floor]
        else:
            where = ""
        live_rows = f"SELECT * FROM {live}{where}"
        rebuilt_rows = f"SELECT * FROM {rebuilt}{where}"
        cols = ", ".join(table.key)
        only_live = await conn.fetch(
            f"SELECT {cols} FROM ({live_rows} EXCEPT ALL {rebuilt_rows}) d ORDER BY {cols} LIMIT 5",
            *args,
        )
        n_live = await conn.fetchval(
            f"SELECT count(*) FROM ({live_rows} EXCEPT ALL {rebuilt_rows}) d", *args
        )
        n_rebuilt = await conn.fetchval(
            f"SELECT count(*) FROM ({rebuilt_rows} EXCEPT ALL {live_rows}) d", *args
        )
        if n_live or n_rebuilt:
            examples = [" ".join(str(v) for v in r.values()) for r in only_live]
            diffs.append(Difference(table.name, n_live, n_rebuilt, examples))
    return diffs
