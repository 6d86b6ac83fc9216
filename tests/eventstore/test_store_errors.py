"""The store's failure kinds and lock keys: driver errors translated once, keys in one home."""

from __future__ import annotations

import re

import asyncpg
import pytest

from eventstore import locks
from eventstore.errors import EventRejected, StoreUnavailable, store_boundary, translate
from tests.support import REPO

SQL = REPO / "sql"


def test_append_lock_key_matches_the_trigger() -> None:
    """The trigger's and every later definition of append_events take the same key."""
    text = "".join(p.read_text() for p in sorted(SQL.glob("*.sql")))
    keys = set(re.findall(r"pg_advisory_xact_lock\((\d+)\)", text))
    assert keys == {str(locks.APPEND)}


def test_lock_keys_are_distinct() -> None:
    keys = [v for k, v in vars(locks).items() if k.isupper()]
    assert len(keys) == len(set(keys)) >= 5


@pytest.mark.parametrize(
    "value",
    ["caf\udce9", "a\x00b"],  # a lone surrogate (client-side encode) and NUL (server-side)
)
async def test_unstorable_text_is_rejected_not_unavailable(pool: asyncpg.Pool, value: str) -> None:
    with pytest.raises(EventRejected):
        with store_boundary():
            await pool.fetchval("SELECT $1::text", value)


async def test_index_row_too_large_is_rejected(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE t (k text PRIMARY KEY)")
        with pytest.raises(EventRejected):
            with store_boundary():
                await conn.execute(
                    "INSERT INTO t SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i"
                )


async def test_lost_connection_is_unavailable(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        await pool.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(StoreUnavailable):
            with store_boundary():
                await conn.fetchval("SELECT 1")


def test_refused_connection_and_timeout_are_unavailable() -> None:
    assert isinstance(translate(ConnectionRefusedError(111, "refused")), StoreUnavailable)
    assert isinstance(translate(TimeoutError()), StoreUnavailable)
    assert isinstance(translate(asyncpg.InternalClientError("x")), StoreUnavailable)
    assert isinstance(translate(asyncpg.CannotConnectNowError("starting")), StoreUnavailable)
    assert isinstance(translate(asyncpg.DiskFullError("full")), StoreUnavailable)


def test_programming_errors_are_not_swallowed() -> None:
    with pytest.raises(KeyError):
        with store_boundary():
            raise KeyError("a bug stays a bug")
