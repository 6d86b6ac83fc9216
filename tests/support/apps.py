"""Helpers to run the real aiohttp app against the test database."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import msgspec

from eventstore.pool import connect
from service.core.config import Settings
from service.ingest import channels

#: generated files (the API key) go here, never into the working tree
DATA_DIR = Path(tempfile.mkdtemp(prefix="acklog-test-data-"))


def settings(**overrides: Any) -> Settings:
    base = Settings(run_projector=False, auth_failures_per_minute=1000, data_dir=DATA_DIR)
    return msgspec.structs.replace(base, **overrides)


async def add_channel(dsn: str, name: str, provider: str, **kw: Any) -> str:
    conn = await connect(dsn)
    try:
        return await channels.add(conn, name, provider, **kw)
    finally:
        await conn.close()
