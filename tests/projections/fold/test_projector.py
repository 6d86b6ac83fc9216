"""The projector against real PostgreSQL: exactly-once, leadership, rebuild, verify."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator

import asyncpg
import pytest

from eventstore import locks
from eventstore.append import Appender, write_batch
from eventstore.events import NewEvent
from eventstore.pool import connect
from eventstore.read import head
from projections.rebuild import rebuild, verify
from projections.runner import Projector
from tests.support.payloads import event, meta_incoming, meta_status

ACKS = ["sent", "delivered", "read"]


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(dsn)
    try:
        yield c
    finally:
        await c.close()


def traffic(n_messages: int, seed: int = 0) -> list[NewEvent]:
    """Acks for outgoing messages, shuffled, with retried duplicates and a failure or two."""
    rng = random.Random(seed)
    events = []
    for i in range(n_messages):
        wamid = f"wamid.{seed}.{i}"
        statuses = ACKS[: rng.randint(1, 3)]
        if i % 17 == 0:
            statuses = ["failed", "sent"]
        for status in statuses:
            code = 131014 if status == "failed" else None
            events.append(event(meta_status(wamid, status, code=code)))
        if rng.random() < 0.3:
            events.append(events[-1])  # a provider retry: same bytes again
        if i % 5 == 0:
            events.append(event(meta_incoming(f"wamid.in.{seed}.{i}")))
    rng.shuffle(events)
    return events


async def states(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT key, state FROM rm.messages")
    return {r["key"]: r["state"] for r in rows}


async def test_folds_the_log_and_checkpoints(
    dsn: str, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    async with pool.acquire() as c:
        await write_batch(
            c,
            [
                event(meta_status("wamid.1", "read")),
                event(meta_status("wamid.1", "sent")),
                event(meta_status("wamid.2", "failed", code=131014)),
                event(meta_incoming("wamid.3")),
                event(b"{not json"),
            ],
        )
    projector = Projector(dsn, batch_size=2)
    assert await projector.catch_up(conn) == 5
    assert await states(conn) == {"wamid.1": "read", "wamid.2": "not_sent", "wamid.3": "received"}
    failures = await conn.fetchval("SELECT failures::text FROM rm.messages WHERE key = 'wamid.2'")
    assert '"code": "131014"' in failures
    assert await conn.fetchval("SELECT position FROM checkpoints WHERE name = 'messages'") == 5
    quarantined = await conn.fetchrow("SELECT position, reason FROM rm.quarantine")
    assert quarantined["position"] == 5
    assert quarantined["reason"].startswith("body is not valid JSON")
    timeline = await conn.fetch(
        "SELECT status, advanced FROM rm.timeline WHERE key = 'wamid.1' ORDER BY position"
    )
    assert [(r["status"], r["advanced"]) for r in timeline] == [("read", True), ("sent", False)]


async def test_crash_between_fold_and_commit_is_exactly_once(
    dsn: str, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    async with pool.acquire() as c:
        await write_batch(c, traffic(200))
    crashes = 0

    async def crash(_: object) -> None:
        nonlocal crashes
        crashes += 1
        if crashes in (2, 5):  # die with the models written but not committed
            raise RuntimeError("killed between fold and commit")

    projector = Projector(dsn, batch_size=50, before_commit=crash)
    for _ in range(3):
        try:
            await projector.catch_up(conn)
            break
        except RuntimeError:
            continue
    assert crashes >= 5
    assert projector.position == await head(conn)
    n_timeline = await conn.fetchval("SELECT count(*) FROM rm.timeline")
    assert n_timeline == await conn.fetchval(
        "SELECT count(*) FROM events e WHERE NOT EXISTS"
        " (SELECT 1 FROM rm.quarantine q WHERE q.position = e.position)"
    ), "one timeline row per status event: nothing applied twice, nothing lost"
    assert await verify(dsn) == []


async def test_two_projectors_never_both_apply_an_event(
    dsn: str, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """Even without the leader lock, the write lock and checkpoint guard serialize them."""
    async with pool.acquire() as c:
        await write_batch(c, traffic(300, seed=1))
    a, b = Projector(dsn, batch_size=37), Projector(dsn, batch_size=41)
    ca, cb = await connect(dsn), await connect(dsn)
    try:
        await asyncio.gather(a.catch_up(ca), b.catch_up(cb))
    finally:
        await ca.close()
        await cb.close()
    assert await conn.fetchval(
        "SELECT count(DISTINCT position) FROM rm.timeline"
    ) == await conn.fetchval("SELECT count(*) FROM rm.timeline WHERE seq = 0")
    assert await verify(dsn) == []


async def leader_pid(conn: asyncpg.Connection) -> int:
    pid: int = await conn.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND ((classid::bigint << 32) | objid::bigint) = $1",
        locks.PROJECTOR_LEADER,
    )
    return pid


async def test_standby_takes_over_when_the_leader_connection_dies(
    dsn: str, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    first, second = Projector(dsn, poll_interval=0.2), Projector(dsn, poll_interval=0.2)
    tasks = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
    try:
        async with asyncio.timeout(20):
            waiters = [asyncio.create_task(p.is_leader.wait()) for p in (first, second)]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            leader, standby = (first, second) if first.is_leader.is_set() else (second, first)
            assert not standby.is_leader.is_set()
            async with pool.acquire() as c:
                await write_batch(c, traffic(100, seed=2))
            await leader.wait_for(await head(conn))

            loop = asyncio.get_running_loop()
            killed_at = loop.time()
            await conn.execute("SELECT pg_terminate_backend($1)", await leader_pid(conn))
            await standby.is_leader.wait()
            takeover = loop.time() - killed_at
            async with pool.acquire() as c:
                await write_batch(c, traffic(100, seed=3))
            await standby.wait_for(await head(conn))
        print(f"standby takeover: {takeover:.3f}s")
        assert takeover < 5, f"takeover took {takeover:.2f}s"
        assert await verify(dsn) == []
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_verify_after_concurrent_ingest(dsn: str, pool: asyncpg.Pool) -> None:
    projector = Projector(dsn, poll_interval=0.2)
    task = asyncio.create_task(projector.run())
    appender = Appender(pool)
    await appender.start()
    try:
        events = traffic(400, seed=4)
        await asyncio.gather(*(appender.append(e) for e in events))
        async with pool.acquire() as c:
            target = await head(c)
        async with asyncio.timeout(30):
            await projector.wait_for(target)
        assert await verify(dsn) == []
    finally:
        await appender.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_verify_reports_a_difference(
    dsn: str, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    async with pool.acquire() as c:
        await write_batch(c, traffic(20, seed=5))
    await Projector(dsn).catch_up(conn)
    await conn.execute("UPDATE rm.messages SET state = 'played' WHERE key = 'wamid.5.0'")
    diffs = await verify(dsn)
    assert [(d.table, d.only_live, d.only_rebuilt) for d in diffs] == [("messages", 1, 1)]


async def test_rebuild_during_live_ingest_keeps_the_read_side_up(
    dsn: str, pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    projector = Projector(dsn, poll_interval=0.1)
    task = asyncio.create_task(projector.run())
    appender = Appender(pool)
    await appender.start()
    stop = asyncio.Event()
    seen: list[int] = []

    async def ingest() -> None:
        seed = 100
        while not stop.is_set():
            await asyncio.gather(*(appender.append(e) for e in traffic(20, seed=seed)))
            seed += 1

    async def read_side() -> None:
        reader = await connect(dsn)
        try:
            while not stop.is_set():
                seen.append(await reader.fetchval("SELECT count(*) FROM rm.messages"))
        finally:
            await reader.close()

    try:
        async with pool.acquire() as c:
            await write_batch(c, traffic(500, seed=6))
        await projector.wait_for(await head(conn))
        before = await conn.fetchval("SELECT count(*) FROM rm.messages")
        workers = [asyncio.create_task(ingest()), asyncio.create_task(read_side())]
        await rebuild(dsn)
        stop.set()
        await asyncio.gather(*workers)
        async with asyncio.timeout(30):
            await projector.wait_for(await head(conn))
        assert seen and min(seen) >= before, "the query side saw an empty or half-built table"
        assert all(x <= y for x, y in itertools.pairwise(seen)), "counts went backwards"
        assert await verify(dsn) == []
    finally:
        stop.set()
        await appender.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
