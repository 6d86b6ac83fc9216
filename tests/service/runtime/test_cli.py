"""The ``acklog`` commands as a user runs them: exit codes and what they print."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import asyncpg

from eventstore.append import write_batch
from eventstore.pool import connect
from projections.runner import Projector
from tests.projections.fold.test_projector import traffic
from tests.support.apps import DATA_DIR
from tests.support.procs import ROOT

#: a time as ``channels list`` and ``keys list`` print it
UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


async def acklog(dsn: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        *args,
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": dsn, "ACKLOG_DATA_DIR": str(DATA_DIR)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return await proc.wait(), out.decode()


async def test_verify_and_rebuild_exit_codes(dsn: str, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as c:
        await write_batch(c, traffic(50, seed=9))
    conn = await connect(dsn)
    try:
        await Projector(dsn).catch_up(conn)
        code, out = await acklog(dsn, "verify")
        assert (code, "equal a rebuild" in out) == (0, True), out

        await conn.execute("UPDATE rm.messages SET state = 'played' WHERE key = 'wamid.9.1'")
        code, out = await acklog(dsn, "verify")
        assert code == 1, out
        assert "messages: 1 rows only live, 1 only rebuilt" in out

        code, out = await acklog(dsn, "rebuild")
        assert code == 0 and "swapped in" in out, out
        assert (
            await conn.fetchval("SELECT state FROM rm.messages WHERE key = 'wamid.9.1'") != "played"
        )
        code, out = await acklog(dsn, "verify")
        assert code == 0, out
    finally:
        await conn.close()


async def test_channels_commands(dsn: str) -> None:
    code, out = await acklog(dsn, "channels", "add", "shop", "--provider", "wamm", "--port", "9999")
    assert code == 0 and "http://127.0.0.1:9999/hooks/shop?token=ack_" in out, out
    code, out = await acklog(dsn, "channels", "add", "shop", "--provider", "wamm")
    assert code == 2 and "already exists" in out
    code, out = await acklog(dsn, "channels", "add", "../x", "--provider", "wamm")
    assert code == 2 and "invalid channel name" in out
    code, out = await acklog(dsn, "channels", "list")
    assert code == 0 and re.match(rf"shop\twamm\ttokens=\[1@{UTC}\]\tsecrets=\[\]", out), out
    code, out = await acklog(dsn, "channels", "remove", "shop")
    assert code == 0
    code, out = await acklog(dsn, "channels", "remove", "shop")
    assert code == 2 and "no channel 'shop'" in out
