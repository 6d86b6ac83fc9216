"""Day-to-day operations as a user meets them: real ``acklog`` processes, real sockets.

Channel updates that keep tokens, the CLI's small conveniences (``--version``, ``--json``,
token ids, secrets from files and stdin, tokens starting with ``-``, ``tail`` from the past,
``simulate | head``), bounded start-up waits with one clear line, logging (JSON, access log,
refused webhooks, shutdown, never the API key) and ``/metrics`` on its own port.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from eventstore import channels as registry
from eventstore.append import write_batch
from service.cli.tail import parse_since
from service.core.logs import RefusedWebhooks
from service.runtime.app import make_app
from tests.conftest import with_database
from tests.service.metrics.test_prometheus_live import free_port
from tests.support.apps import DATA_DIR, add_channel, settings
from tests.support.payloads import event, waha_outgoing
from tests.support.procs import ROOT, Process, serve
from tests.support.procs import command_output as acklog

Server = Callable[..., Awaitable[TestServer]]


async def channel(dsn: str, name: str) -> registry.Channel:
    conn = await asyncpg.connect(dsn)
    try:
        found = await registry.get(conn, name)
    finally:
        await conn.close()
    assert found is not None
    return found


# --- channels ---------------------------------------------------------------------------------


async def test_channels_update_keeps_tokens_and_secrets(dsn: str) -> None:
    token = await add_channel(dsn, "shop", "meta", secrets_=["s1"])
    before = await channel(dsn, "shop")
    code, out = await acklog(
        dsn,
        "channels",
        "update",
        "shop",
        "--sent-deadline",
        "20",
        "--delivered-deadline",
        "40",
        "--allow",
        "10.0.0.0/8",
        "--allow",
        "192.168.1.7",
        "--basic-user",
        "hook",
    )
    assert code == 0, out
    assert "tokens and secrets unchanged" in out
    after = await channel(dsn, "shop")
    assert (after.sent_deadline_s, after.delivered_deadline_s) == (20, 40)
    assert after.allow_cidrs == ("10.0.0.0/8", "192.168.1.7/32")
    assert after.basic_user == "hook"
    assert after.token_hashes == before.token_hashes == (registry.token_hash(token),)
    assert after.secrets == before.secrets == ("s1",)

    code, out = await acklog(dsn, "channels", "update", "shop", "--allow-any", "--no-basic-user")
    assert code == 0, out
    cleared = await channel(dsn, "shop")
    assert (cleared.allow_cidrs, cleared.basic_user, cleared.sent_deadline_s) == ((), None, 20)

    for args, message in (
        (("nope", "--sent-deadline", "5"), "no channel 'nope'"),
        (("shop",), "nothing to update"),
        (("shop", "--sent-deadline", "0"), "invalid channel settings"),
        (("shop", "--allow", "not-a-net"), "invalid CIDR"),
    ):
        code, out = await acklog(dsn, "channels", "update", *args)
        assert code == 2 and message in out and "Traceback" not in out, out


async def test_list_json_token_ids_and_secrets_off_the_command_line(
    dsn: str, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    code, out = await acklog(
        dsn, "channels", "add", "shop", "--provider", "meta", "--secret-file", str(secret_file)
    )
    assert code == 0, out
    code, out = await acklog(dsn, "channels", "add-secret", "shop", stdin=b"from-stdin\n")
    assert code == 0 and "secret 2 added" in out, out
    assert (await channel(dsn, "shop")).secrets == ("from-a-file", "from-stdin")

    code, out = await acklog(dsn, "channels", "add-token", "shop")
    assert code == 0, out
    token_id = int(out.split()[1])  # "token <id> added to shop: <url>"
    code, out = await acklog(dsn, "channels", "list", "--json")
    assert code == 0, out
    [row] = json.loads(out)
    assert row["name"] == "shop" and row["tokens"][-1] == token_id and row["secrets"] == [1, 2]
    code, out = await acklog(dsn, "channels", "revoke-token", "shop", str(token_id))
    assert code == 0 and f"token {token_id} of shop revoked" in out, out

    code, out = await acklog(dsn, "channels", "add", "dash", "--provider", "wamm", "--token", "-x1")
    assert code == 0, out
    assert "token=-x1" in out
    code, out = await acklog(dsn, "channels", "add", "eq", "--provider", "wamm", "--token=-x2")
    assert code == 0 and "token=-x2" in out, out
    assert (await channel(dsn, "dash")).token_hashes == (registry.token_hash("-x1"),)


async def test_version() -> None:
    code, out = await acklog("postgresql://unused", "--version")
    assert code == 0 and out.startswith("acklog ") and out.split()[1][0].isdigit(), out


# --- start-up ---------------------------------------------------------------------------------


def _closed_port() -> int:
    return free_port()  # nothing listens there


@pytest.mark.parametrize("command", [["channels", "list"], ["serve", "--port", "0"], ["verify"]])
async def test_unreachable_database_waits_bounded_then_one_line(command: list[str]) -> None:
    dsn = f"postgresql://acklog@127.0.0.1:{_closed_port()}/acklog"
    loop = asyncio.get_running_loop()
    started = loop.time()
    code, out = await acklog(dsn, *command, ACKLOG_DB_WAIT="2")
    took = loop.time() - started
    assert code == 3, out
    assert "waiting for PostgreSQL at 127.0.0.1:" in out  # progress, at once
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "after 2s" in errors[0] and "ACKLOG_DB_WAIT" in errors[0], out
    assert "Traceback" not in out
    assert took < 30, took


async def test_missing_database_is_one_line(dsn: str) -> None:
    code, out = await acklog(with_database(dsn, "no_such_db"), "channels", "list")
    assert code == 3, out
    assert out.count("\n") == 1 and "does not exist" in out and "createdb" in out, out


async def test_port_in_use_is_one_line(dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = await acklog(dsn, "serve", "--port", str(port), ACKLOG_API_KEY="k")
        # one role alone exits 4; the supervisor stops its other children and exits 1
        alone, alone_out = await acklog(
            dsn, "serve", "--role", "ingest", "--port", str(port), ACKLOG_API_KEY="k"
        )
    assert code == 1, out
    assert alone == 4 and alone_out.count("error:") == 1, alone_out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--port" in errors[0] and "in use" in errors[0], out


# --- serve: logs and metrics ---------------------------------------------------------------------


async def test_json_logs_access_log_refusals_shutdown_and_no_api_key(dsn: str) -> None:
    token = await add_channel(dsn, "shop", "waha")
    port, metrics_port = free_port(), free_port()
    while metrics_port == port:
        metrics_port = free_port()
    proc = serve(
        dsn,
        port,
        ACKLOG_LOG_FORMAT="json",
        ACKLOG_ACCESS_LOG="1",
        ACKLOG_METRICS_PORT=str(metrics_port),
        ACKLOG_DATA_DIR=str(DATA_DIR / f"keys-{port}"),  # a key generated for this run
    )
    await proc.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/hooks/shop?token={token}", data=waha_outgoing("A")) as r:
                assert r.status == 200
            async with http.post(f"{base}/hooks/shop?token=wrong-token", data=b"{}") as r:
                assert r.status == 401
            async with http.post(f"{base}/hooks/nope?token=x", data=b"{}") as r:
                assert r.status == 404
            async with http.get(f"{base}/metrics") as r:
                assert r.status == 404, "ACKLOG_METRICS_PORT moves /metrics off the public port"
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                assert r.status == 200 and "acklog_webhooks_received_total" in await r.text()

            for needle in ('"status":404', "refused webhook: 404"):
                await proc.wait_lines(lambda lines, n=needle: any(n in line for line in lines))
    finally:
        await proc.stop()
    text = "\n".join(proc.lines)
    key = (DATA_DIR / f"keys-{port}" / "api_key").read_text().strip()
    assert key not in text, "the API key is never logged"
    assert "api_key" in text  # where it is, instead
    assert token not in text and "wrong-token" not in text, "no token, not even a wrong one"
    records = [json.loads(line) for line in proc.lines if line.startswith("{")]
    assert records, text
    access = [r for r in records if r.get("access")]
    assert {(r["method"], r["path"], r["status"]) for r in access} >= {
        ("POST", "/hooks/shop", 200),
        ("POST", "/hooks/shop", 401),
        ("POST", "/hooks/nope", 404),
    }
    refused = [r for r in records if r["logger"] == "acklog.refused"]
    assert {(r["status"], r["channel"]) for r in refused} == {(401, "shop"), (404, "unknown")}
    assert all(r["level"] == "warning" for r in refused)
    assert any("SIGTERM received: shutting down" in r["message"] for r in records), text
    assert records[-1]["message"] == "acklog stopped (exit 0)", records[-1]


def test_refused_webhooks_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusedWebhooks(budget=3, window=3600)
    with caplog.at_level("DEBUG", logger="acklog.refused"):
        for _ in range(10):
            refusals.note("wamm", "shop", "unauthorized")
        refusals.note("wamm", "other", "unauthorized")
        refusals._flush()
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [lvl for lvl, _ in levels[:10]] == ["WARNING"] * 3 + ["DEBUG"] * 7
    assert levels[10][0] == "WARNING"  # another channel has its own budget
    assert levels[-1] == (
        "WARNING",
        "refused webhook: 7 more unauthorized on channel shop in the last minute (logged at DEBUG)",
    )


# --- tail and simulate --------------------------------------------------------------------------


async def test_tail_from_a_past_position_and_time(dsn: str, pool: asyncpg.Pool) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    async with pool.acquire() as conn:
        await write_batch(
            conn,
            [
                event(waha_outgoing("OLD"), channel="w", provider="waha", at=old),
                event(waha_outgoing("NEW1"), channel="w", provider="waha"),
                event(waha_outgoing("NEW2"), channel="w", provider="waha"),
            ],
        )
    for args, want in ((["--from-position", "1"], 3), (["--since", "1h"], 2)):
        proc = Process(["tail", *args], dsn)
        await proc.start()
        try:
            await proc.wait_lines(
                lambda lines, n=want: sum(line.startswith("#") for line in lines) >= n
            )
        finally:
            await proc.stop()
        shown = [line.split()[0] for line in proc.lines if line.startswith("#")]
        assert shown == [f"#{p}" for p in range(4 - want, 4)], proc.lines
    assert parse_since("2h", old) == old - dt.timedelta(hours=2)
    assert parse_since("2026-03-01T12:00", old) == dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    code, out = await acklog(dsn, "tail", "--since", "yesterday")
    assert code == 2 and "--since takes" in out and "Traceback" not in out


async def test_simulate_into_a_closed_pipe_ends_quietly(aiohttp_server: Server, dsn: str) -> None:
    server = await aiohttp_server(make_app(settings(), dsn))
    await add_channel(dsn, "shop", "wamm")
    read_end, write_end = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        "simulate",
        "shop",
        "--count",
        "20",
        "--url",
        f"http://127.0.0.1:{server.port}",
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": dsn, "ACKLOG_DATA_DIR": str(DATA_DIR)},
        stdout=write_end,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        first = await asyncio.get_running_loop().run_in_executor(None, reader.readline)
    # like `| head -1`: the reader is gone
    assert first.startswith(b"simulating wamm webhooks")
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()


def test_log_settings_are_checked_and_applied() -> None:
    import logging

    from service.core.logs import configure

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure("json", "warning")
        assert root.level == logging.WARNING
        assert type(root.handlers[0].formatter).__name__ == "JsonFormatter"
        with pytest.raises(SystemExit, match="ACKLOG_LOG_LEVEL must be"):
            configure("text", "loud")
        with pytest.raises(SystemExit, match="ACKLOG_LOG_FORMAT must be one of text, json"):
            configure("xml", "INFO")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_database_messages_never_show_the_password() -> None:
    from service.core.database import where

    assert where("postgresql://acklog:s3cret@db.example:6543/prod") == "db.example:6543/prod"
    assert "s3cret" not in where("postgresql://u:s3cret@/acklog?host=/run/postgresql")
