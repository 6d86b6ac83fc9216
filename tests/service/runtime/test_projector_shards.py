"""Live projection shards (``ACKLOG_PROJECTOR_SHARDS``) as real ``acklog project`` processes.

A mixed log (a dozen channels of Meta and WAHA, one of them busy; observations, acks out of
order, group receipts, deletions, connection reports, retried duplicates, undecodable
bodies) is folded by n shard projectors, each a process of its own or all n on one loop;
the live tables must equal, table by table, one projector's fold of the same log into a
schema aside (``schema.compare``), before and after a sweep at the same instant, and
``acklog verify`` must say equal. A shard's leader killed with SIGKILL mid-fold hands over
to its standby with nothing folded twice or skipped. Projectors started with another number
of shards than recorded refuse, saying how to change it; ``acklog rebuild --shards N``
changes it, and shards still running with the old number stop.

``received_at`` lies a day ahead, so the live sweep (shard 0's, on the real clock) marks
nothing while the processes fold: what it would mark depends on when it runs, and the
comparison is between folds, then sweeps at one instant on both sides.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import AsyncIterator

import asyncpg
import pytest

from eventstore import checkpoint, locks
from eventstore.append import write_batch
from eventstore.events import NewEvent
from eventstore.pool import connect
from eventstore.read import head
from projections.readmodel import LIVE, bulk, schema, write
from projections.readmodel import checkpoints as live_checkpoints
from projections.rebuild import verify
from projections.runner import Projector
from service.ingest import channels
from tests.projections.fold.test_bulk_fold import body
from tests.support.payloads import event
from tests.support.procs import Process, command_output, free_port, serve

META_KINDS = ["meta_status", "meta_status", "meta_group", "meta_incoming"]
WAHA_KINDS = ["waha_outgoing", "waha_ack", "waha_ack", "waha_del", "waha_session"]
CHANNELS = [f"c{i}" for i in range(11)] + ["busy"]
#: seconds any one wait may take before the test fails saying what did not happen
WAIT = 120.0


def provider_of(channel: str) -> str:
    return "waha" if channel == "busy" or int(channel[1:]) % 2 else "meta"


def mixed_log(n_events: int, seed: int, start: dt.datetime) -> list[NewEvent]:
    """Half the webhooks on the busy channel, the rest over eleven; acks in random order
    (an ack before its message), one in five sent twice, one in a hundred undecodable."""
    rng = random.Random(seed)
    at = start
    events: list[NewEvent] = []
    while len(events) < n_events:
        channel = "busy" if rng.random() < 0.5 else rng.choice(CHANNELS[:-1])
        provider = provider_of(channel)
        keys = 400 if channel == "busy" else 40
        at += dt.timedelta(seconds=rng.choice([0, 0, 1, 2, 3, 5, 8, 70]))
        if rng.random() < 0.01:
            raw = b"{not json"
        else:
            kinds = WAHA_KINDS if provider == "waha" else META_KINDS
            _, raw = body(rng.choice(kinds), rng.randrange(keys), rng.randrange(10))
        e = event(raw, channel, provider, at)
        events += [e, e] if rng.random() < 0.2 else [e]
    return events


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(dsn)
    await bulk.bulk_codecs(c)
    for name in CHANNELS:  # short deadlines on some: the fold counts late acks as missed
        short = name in ("c1", "c2", "busy")
        await channels.add(
            c,
            name,
            provider_of(name),
            token=f"t-{name}",
            sent_deadline_s=5 if short else None,
            delivered_deadline_s=10 if short else None,
        )
    try:
        yield c
    finally:
        await c.close()


async def append(conn: asyncpg.Connection, n_events: int, seed: int) -> int:
    """``n_events`` more, after the last one: ``received_at`` never goes back along the log
    (as at ingest; with a clock running backwards, where batches are cut would matter)."""
    last = await conn.fetchval("SELECT max(received_at) FROM events")
    start = last or dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    events = mixed_log(n_events, seed, start)
    for i in range(0, len(events), 2000):
        await write_batch(conn, events[i : i + 2000])
    return await head(conn)


def shard_process(dsn: str, shards: int, shard: int | None = None) -> Process:
    """``acklog project`` folding ``shard`` of ``shards`` (None: all of them, one loop)."""
    args = ["project"] if shard is None else ["project", "--shard", str(shard)]
    return Process(args, dsn, ACKLOG_PROJECTOR_SHARDS=str(shards))


async def positions(conn: asyncpg.Connection) -> list[int]:
    return [p for _, p in await live_checkpoints.positions(conn)]


async def until_folded(conn: asyncpg.Connection, target: int) -> None:
    """Poll the shards' checkpoints (other processes: there is no event to await)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while min(await positions(conn)) < target:
        assert loop.time() < deadline, f"shards at {await positions(conn)} of {target}"
        await asyncio.sleep(0.05)


async def equals_one_projector(conn: asyncpg.Connection, dsn: str) -> int:
    """The live tables equal one projector's fold of the same log, table by table, before
    and after a sweep at the same instant on both sides; returns how many it marked."""
    aside = schema.fresh_name("single")
    await schema.create(conn, aside)
    try:
        one = Projector(dsn, schema=aside, name=f"test:{aside}", live=False)
        await one.catch_up(conn)
        assert one.position == await head(conn)
        assert await schema.compare(conn, aside) == []
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
        swept = await write.sweep(conn, LIVE, later)
        assert swept == await write.sweep(conn, aside, later)
        assert await schema.compare(conn, aside) == []
        return swept
    finally:
        await schema.drop(conn, aside)
        await checkpoint.drop(conn, f"test:{aside}")


async def leader(conn: asyncpg.Connection, shard: int, shards: int) -> tuple[int, str]:
    """(backend pid, application_name) of shard ``shard``'s leader, (0, "") for none."""
    row = await conn.fetchrow(
        "SELECT l.pid, a.application_name FROM pg_locks l"
        " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
        " AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
        locks.projector_leader(shard, shards),
    )
    return (row["pid"], row["application_name"]) if row else (0, "")


@pytest.mark.parametrize(("shards", "processes"), [(2, True), (3, True), (3, False)])
async def test_shards_fold_what_one_projector_folds(
    dsn: str, conn: asyncpg.Connection, shards: int, processes: bool
) -> None:
    target = await append(conn, 6000, seed=shards)
    procs = (
        [shard_process(dsn, shards, k) for k in range(shards)]
        if processes
        else [shard_process(dsn, shards)]
    )
    try:
        for p in procs:
            await p.start()
        await until_folded(conn, target)
        # more while they run: the shards follow the log, each from its own checkpoint
        target = await append(conn, 2000, seed=100 + shards)
        await until_folded(conn, target)
    finally:
        for p in procs:
            await p.stop()
    assert await checkpoint.recorded_shards(conn) == shards
    assert await positions(conn) == [target] * shards
    names = [n for n, _, _ in await checkpoint.all_checkpoints(conn)]
    assert names == live_checkpoints.names(shards)
    assert await verify(dsn) == []
    swept = await equals_one_projector(conn, dsn)
    assert swept > 0, "the sweep marked nothing: the log left no message waiting"


async def test_a_shard_leader_killed_mid_fold_its_standby_takes_over(
    dsn: str, conn: asyncpg.Connection
) -> None:
    shards = 2
    target = await append(conn, 30_000, seed=7)
    procs = [shard_process(dsn, shards, k) for k in range(shards) for _ in range(2)]
    loop = asyncio.get_running_loop()
    try:
        for p in procs:
            await p.start()
        deadline = loop.time() + WAIT
        while len(at := await positions(conn)) < shards or not at[1]:
            assert loop.time() < deadline, "shard 1 wrote no checkpoint"
            await asyncio.sleep(0.01)
        backend, app = await leader(conn, 1, shards)
        victim = next(p for p in procs if app == f"acklog-projector-1/2-{p.pid}")
        killed_at = (await positions(conn))[1]
        await victim.kill()
        killed = loop.time()
        takeover = None
        while min(await positions(conn)) < target:
            assert loop.time() - killed < WAIT, f"not caught up: {await positions(conn)}"
            new_backend, new_app = await leader(conn, 1, shards)
            if takeover is None and new_backend and new_backend != backend:
                takeover = loop.time() - killed
                assert new_app != app
            await asyncio.sleep(0.01)
        finished = loop.time() - killed
    finally:
        for p in procs:
            await p.stop()
    print(
        f"shard 1 of 2: leader killed at position {killed_at} of {target}; standby leading"
        f" after {takeover:.3f}s, every shard at the head {finished:.2f}s after the kill"
    )
    assert killed_at < target and takeover is not None and takeover < 5
    # nothing folded twice or skipped: every table (counters too) as one projector folds it
    assert await verify(dsn) == []  # first: equals_one_projector sweeps a month ahead
    await equals_one_projector(conn, dsn)


async def test_another_number_of_shards_refuses_until_a_rebuild_changes_it(
    dsn: str, conn: asyncpg.Connection
) -> None:
    target = await append(conn, 3000, seed=3)
    two = shard_process(dsn, 2)
    await two.start()
    try:
        await until_folded(conn, target)
        # a projector with another number: refuses, saying how to change it
        code, out = await command_output(dsn, "project", ACKLOG_PROJECTOR_SHARDS="3")
        assert code == 2, out
        assert "folded in 2 shard(s)" in out and "acklog rebuild --shards 3" in out, out
        code, out = await command_output(
            dsn, "serve", "--role", "projector", ACKLOG_PROJECTOR_SHARDS="1"
        )
        assert code != 0 and "ACKLOG_PROJECTOR_SHARDS=2" in out, out
        # the documented step: a rebuild records 3; the shards still running with 2 stop
        code, out = await command_output(dsn, "rebuild", "--shards", "3")
        assert code == 0, out
        assert two.proc is not None
        async with asyncio.timeout(WAIT):
            assert await two.proc.wait() != 0
        await two.wait_lines(lambda lines: any("acklog rebuild --shards 2" in x for x in lines))
    finally:
        await two.stop()
    assert await checkpoint.recorded_shards(conn) == 3
    assert await positions(conn) == [target] * 3
    names = [n for n, _, _ in await checkpoint.all_checkpoints(conn)]
    assert names == live_checkpoints.names(3), "the old shards' checkpoints are dropped"
    three = shard_process(dsn, 3)
    await three.start()
    try:
        target = await append(conn, 1000, seed=4)
        await until_folded(conn, target)
    finally:
        await three.stop()
    assert await verify(dsn) == []  # first: equals_one_projector sweeps a month ahead
    await equals_one_projector(conn, dsn)


async def test_verify_makes_the_shards_meet_at_the_furthest_checkpoint(
    dsn: str, conn: asyncpg.Connection
) -> None:
    """Shards at different positions: verify folds the ones behind up to the furthest inside
    its rolled-back transaction, compares there, and changes nothing live."""
    target = await append(conn, 3000, seed=5)
    await live_checkpoints.claim(conn, 3)
    for k, upto in enumerate((target, target // 3, target // 2)):
        await Projector(dsn, shard=k, shards=3, batch_size=400).catch_up(conn, upto=upto)
    before = await positions(conn)
    assert before == [target, target // 3, target // 2]
    assert await verify(dsn) == []
    assert await positions(conn) == before
    for k in (1, 2):
        await Projector(dsn, shard=k, shards=3).catch_up(conn)
    await equals_one_projector(conn, dsn)


def test_shard_keys_and_checkpoints() -> None:
    assert locks.projector_leader(0, 1) == locks.PROJECTOR_LEADER
    assert live_checkpoints.name(0, 1) == "messages"
    keys = {locks.projector_leader(k, n) for n in range(1, 65) for k in range(n)}
    writes = {locks.shard_write(k, n) for n in range(1, 65) for k in range(n)}
    assert len(keys) == len(writes) == sum(range(1, 65))
    fixed = {v for k, v in vars(locks).items() if k.isupper() and isinstance(v, int)}
    assert not (keys - {locks.PROJECTOR_LEADER}) & fixed and not writes & fixed
    assert not keys & writes
    assert live_checkpoints.names(3) == ["messages.0/3", "messages.1/3", "messages.2/3"]
    assert all(live_checkpoints.is_live(n) for n in live_checkpoints.names(3))
    assert not live_checkpoints.is_live("feed") and not live_checkpoints.is_live("rebuild:rm_x")


async def test_serve_runs_a_projector_process_per_shard(dsn: str, conn: asyncpg.Connection) -> None:
    target = await append(conn, 2000, seed=8)
    server = serve(dsn, free_port(), ACKLOG_PROJECTOR_SHARDS="2")
    await server.start()
    try:
        assert "projector in 2 shards" in "\n".join(server.lines)
        await until_folded(conn, target)
        leaders = [await leader(conn, k, 2) for k in range(2)]
        apps = [app.rsplit("-", 1)[0] for _, app in leaders]
        assert apps == ["acklog-projector-0/2", "acklog-projector-1/2"]
        assert len({app.rsplit("-", 1)[1] for _, app in leaders}) == 2, "one process each"
    finally:
        await server.stop()
    # the same database, served with another number: the projector refuses, serve exits 1
    code, out = await command_output(dsn, "serve", "--port", str(free_port()))
    assert code == 1, out
    assert "folded in 2 shard(s)" in out and "ACKLOG_PROJECTOR_SHARDS=1" in out, out


async def test_cold_shards_load_in_bulk_once(dsn: str, conn: asyncpg.Connection) -> None:
    """From no checkpoint, one shard's cold start is a rebuild that sets every shard's
    checkpoint; the others wait for it rather than fold the same log batch by batch."""
    target = await append(conn, 4000, seed=9)
    procs = [
        Process(
            ["project", "--shard", str(k)],
            dsn,
            ACKLOG_PROJECTOR_SHARDS="2",
            ACKLOG_BULK_CATCHUP="1000",
        )
        for k in range(2)
    ]
    try:
        for p in procs:
            await p.start()
        await until_folded(conn, target)
    finally:
        for p in procs:
            await p.stop()
    assert await conn.fetchval("SELECT count(*) FROM rebuilds") == 1
    assert await verify(dsn) == []
    await equals_one_projector(conn, dsn)
