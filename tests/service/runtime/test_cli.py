"""The ``acklog`` commands as a user runs them: exit codes and what they print."""

from __future__ import annotations

import asyncio
import json
import re

import asyncpg

from eventstore.append import write_batch
from eventstore.pool import connect
from projections.runner import Projector
from tests.projections.fold.test_projector import traffic
from tests.support.procs import command_output as acklog

#: a time as ``channels list`` and ``keys list`` print it
UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


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
    # a rotation: each token shows when it was added, so the old one is told from the new one
    conn = await connect(dsn)
    try:
        await conn.execute("UPDATE channel_tokens SET created_at = '2026-01-02 03:04:05+00'")
    finally:
        await conn.close()
    code, out = await acklog(dsn, "channels", "add-token", "shop")
    assert code == 0, out
    code, out = await acklog(dsn, "channels", "add-secret", "shop", "s3cret")
    assert code == 0, out
    code, out = await acklog(dsn, "channels", "list")
    assert code == 0, out
    line = re.search(r"tokens=\[(.*?)\]\tsecrets=\[(.*?)\]", out)
    assert line, out
    old, new = line.group(1).split(", ")
    assert old == "1@2026-01-02T03:04:05Z" and re.fullmatch(rf"2@{UTC}", new), out
    assert re.fullmatch(rf"1@{UTC}", line.group(2)) and "s3cret" not in out, out
    code, out = await acklog(dsn, "channels", "list", "--json")
    [row] = json.loads(out)
    assert row["tokens"] == [1, 2] and row["token_created_at"][0] == "2026-01-02T03:04:05Z"
    assert len(row["secret_created_at"]) == 1
    code, out = await acklog(dsn, "channels", "remove", "shop")
    assert code == 0
    code, out = await acklog(dsn, "channels", "remove", "shop")
    assert code == 2 and "no channel 'shop'" in out


async def test_help_says_what_each_command_does(dsn: str) -> None:
    code, out = await acklog(dsn, "--help")
    assert code == 0 and "The ``acklog`` command line" not in out, out
    assert "append-only PostgreSQL log" in out and "keys" in out, out
    for command, says in (
        ("migrate", "Apply the pending SQL migrations"),
        ("project", "Run only the projector"),
        ("rebuild", "Replay the whole log into fresh read models"),
        ("verify", "compare them with the live ones"),
        ("keys", "To rotate: keys add NEW"),
    ):
        code, out = await acklog(dsn, command, "--help")
        assert code == 0 and says in " ".join(out.split()), (command, out)
    for action in ("add", "add-token"):
        code, out = await acklog(dsn, "channels", action, "--help")
        text = " ".join(out.split())
        assert code == 0 and "listen" not in text, out
        assert "host in the printed webhook URL" in text and "ACKLOG_PUBLIC_URL" in text, out
    code, out = await acklog(dsn, "channels", "update", "--help")
    assert code == 0 and "--host" not in out and "--port" not in out, out


async def test_tail_of_a_channel_that_does_not_exist_fails(dsn: str) -> None:
    async with asyncio.timeout(60):  # it used to tail nothing, forever
        code, out = await acklog(dsn, "tail", "--channel", "nosuch")
    assert code == 2 and out.strip() == "error: no channel named 'nosuch'", out
