"""Connection pools with the codecs every acklog connection needs."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

_encode = msgspec.json.Encoder()


def encode_json(value: Any) -> str:
    return _encode.encode(value).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb in and out as Python values, via msgspec (faster than the json module)."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=encode_json, decoder=msgspec.json.decode, schema="pg_catalog"
        )


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, **kw: Any
) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init_connection, **kw
    )
    return pool


async def connect(dsn: str, **kw: Any) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(dsn, **kw)
    await init_connection(conn)
    return conn
