"""Helpers to run the real aiohttp app against the test database."""

from __future__ import annotations

from typing import Any

import msgspec

from eventstore.pool import connect
from service import channels
from service.config import Settings


def settings(**overrides: Any) -> Settings:
    base = Settings(run_projector=False, auth_failures_per_minute=1000)
    return msgspec.structs.replace(base, **overrides)


async def add_channel(dsn: str, name: str, provider: str, **kw: Any) -> str:
    conn = await connect(dsn)
    try:
        return await channels.add(conn, name, provider, **kw)
    finally:
        await conn.close()
