"""The event store's small rules, called directly (found by mutation testing): what a
translated error says, migrations applied in order and only once under the lock, and an
appender that refuses work once stopped."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
from pathlib import Path

import asyncpg
import pytest

from eventstore import locks
from eventstore.append import Appender, AppenderClosed
from eventstore.errors import EventRejected, StoreUnavailable, translate
from eventstore.events import NewEvent
from eventstore.migrate import SQL_DIR, load, migrate


def test_translated_errors_say_what_and_why() -> None:
    rejected = translate(asyncpg.DataError("invalid byte sequence"))
    assert isinstance(rejected, EventRejected)
    assert str(rejected) == "DataError [22000]: invalid byte sequence"
    gone = translate(ConnectionResetError(104, "reset by peer"))
    assert isinstance(gone, StoreUnavailable)
    assert str(gone) == "ConnectionResetError: [Errno 104] reset by peer"
    assert str(translate(TimeoutError())) == "TimeoutError"
    # a sqlstate-like attribute on something that is no PostgreSQL error decides nothing
    odd = OSError("odd")
    odd.sqlstate = "22000"  # type: ignore[attr-defined]
    assert isinstance(translate(odd), StoreUnavailable)


def test_bad_migration_file_names_and_repeated_versions(tmp_path: Path) -> None:
    (tmp_path / "1_short.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match=re.escape("must look like 001_name.sql: 1_short.sql")):
        load(tmp_path)
    (tmp_path / "1_short.sql").unlink()
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="two migrations share version 1"):
        load(tmp_path)


async def test_migrations_applied_in_order_only_once_and_later_ones_too(
    tmp_path: Path, dsn: str
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        # the test database is migrated already: nothing to do
        assert await migrate(conn) == []
        # a later migration is applied (the applied ones before it are skipped, not a stop)
        extra = tmp_path / "sql"
        shutil.copytree(SQL_DIR, extra)
        (extra / "900_extra.sql").write_text("CREATE TABLE extra_one (x int);")
        (extra / "901_more.sql").write_text("CREATE TABLE extra_two (x int);")
        assert await migrate(conn, extra) == [900, 901]
        assert await migrate(conn, extra) == []
        (extra / "900_extra.sql").write_text("CREATE TABLE extra_one (y int);")
        with pytest.raises(RuntimeError, match="migration 900_extra changed after it was applied"):
            await migrate(conn, extra)
    finally:
        await conn.close()


async def test_migrate_holds_the_migration_lock(dsn: str) -> None:
    holder = await asyncpg.connect(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", locks.MIGRATE)
        waiting = asyncio.create_task(migrate(conn))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "migrate ran without waiting for the migration lock"
        await holder.execute("SELECT pg_advisory_unlock($1)", locks.MIGRATE)
        assert await asyncio.wait_for(waiting, 30) == []
        held = await holder.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1",
            locks.MIGRATE & 0xFFFFFFFF,
        )
        assert held == 0, "migrate left the lock held"
    finally:
        await holder.close()
        await conn.close()


async def test_a_stopped_appender_refuses_appends(pool: asyncpg.Pool) -> None:
    appender = Appender(pool)
    await appender.start()
    event = NewEvent(
        channel="c",
        provider="wamm",
        body=b"{}",
        received_at=dt.datetime.now(dt.UTC),
        content_type=None,
        headers={},
    ).with_dedup_key(None)
    assert (await appender.append(event)).position == 1
    await appender.stop()
    with pytest.raises(AppenderClosed):
        await appender.append(event)
    never_started = Appender(pool)
    await never_started.stop()
    with pytest.raises(AppenderClosed):
        await never_started.append(event)
