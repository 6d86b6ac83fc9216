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


async def compare(conn: asyncpg.Connection, other: str) -> list[Difference]:
    """Every table of ``other`` that differs from the live one, with a few example keys."""
    diffs: list[Difference] = []
    for table in TABLES:
        live, rebuilt = f"{LIVE}.{table.name}", f"{schema_name(other)}.{table.name}"
        cols = ", ".join(table.key)
        only_live = await conn.fetch(
            f"SELECT {cols} FROM (TABLE {live} EXCEPT ALL TABLE {rebuilt}) d"
            f" ORDER BY {cols} LIMIT 5"
        )
        n_live = await conn.fetchval(
            f"SELECT count(*) FROM (TABLE {live} EXCEPT ALL TABLE {rebuilt}) d"
        )
        n_rebuilt = await conn.fetchval(
            f"SELECT count(*) FROM (TABLE {rebuilt} EXCEPT ALL TABLE {live}) d"
        )
        if n_live or n_rebuilt:
            examples = [" ".join(str(v) for v in r.values()) for r in only_live]
            diffs.append(Difference(table.name, n_live, n_rebuilt, examples))
    return diffs
