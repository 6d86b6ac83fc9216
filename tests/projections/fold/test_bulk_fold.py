"""The rebuild's bulk fold equals the incremental projector's, for any log (hypothesis).

Random logs of Meta and WAHA webhooks (observations, acks, failures, deletions, incoming
messages, connection reports, retried duplicates) over a few message keys and four channels
(two per provider: keys 0-2 in one, 3-5 in the other) with short deadlines, folded into
fresh schemas of the same database: by the incremental projector at a random batch size, and
by :class:`projections.bulk.BulkFold` at another batch size with a tiny cache (so messages
are evicted, written, read back and upserted again), whole and cut in 2 and 4 shards by
message key (each shard a fold of its own into the same schema, the totals merged and
written once, as ``load_log``'s worker processes do). Every table must be equal, before and
after a sweep at the same instant. A third fold takes the projector's steps but upserts every
message, where the projector COPYs those a batch creates: its rows must be the same too.

``received_at`` never decreases along the log, as at ingest: a deadline missed once stays
missed, so only a clock running backwards could make two batchings disagree about it.

One known case still depends on where batches are cut, and the logs here leave it out:
acks for a key, one of them late (a missed deadline), then an *incoming* message under the
same key. The message turns incoming and its deadlines no longer apply, but a batch that
ended between the two has already counted the miss (``missed_counts`` only grows, as the
metric it feeds must). Incoming messages therefore get keys of their own here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import random
import signal
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import checkpoint
from eventstore.append import write_batch
from eventstore.events import NewEvent
from eventstore.pool import connect
from eventstore.read import head, read
from projections import fold
from projections.bulk import (
    SHARD_FROM_WORKERS,
    TASKS_PER_WORKER,
    BulkFold,
    Task,
    channel_groups,
    load_log,
    split,
    tasks,
)
from projections.readmodel import bulk, load, write
from projections.readmodel.columns import TABLES
from projections.rebuild import bulk_load
from projections.rules.rows import Totals
from projections.runner import LIVE_CHECKPOINT, Projector
from projections.stages import Stages
from service.ingest import channels
from tests.support.payloads import meta_incoming, meta_status, waha_ack, waha_outgoing

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_names = itertools.count()


def _waha_deleted(message_id: str) -> bytes:
    return json.dumps(
        {
            "event": "message.revoked",
            "session": "default",
            "payload": {"revokedMessageId": f"true_11111111111@c.us_{message_id}"},
        }
    ).encode()


def body(kind: str, key: int, arg: int) -> tuple[str, bytes]:
    """(provider, body) of one webhook about message ``key``."""
    wamid = f"wamid.k{key}"
    match kind:
        case "meta_status":
            status = ["sent", "delivered", "read", "failed"][arg % 4]
            code = [131014, 131026, 131047][arg // 4 % 3] if status == "failed" else None
            return "meta", meta_status(wamid, status, code=code)
        case "meta_group":  # a group member's receipt: counted per distinct participant
            status = ["delivered", "read", "played", "failed"][arg % 4]
            return "meta", meta_status(wamid, status, participant=f"p{arg % 3}")
        case "meta_incoming":  # keys of their own: see the module's docstring
            return "meta", meta_incoming(f"wamid.in{key}", text=f"hi {arg}")
        case "waha_outgoing":
            return "waha", waha_outgoing(f"m{key}", ack=arg % 2)
        case "waha_ack":
            return "waha", waha_ack(f"m{key}", [-1, 1, 2, 3, 4][arg % 5])
        case "waha_session":  # connection reports: status runs, changes, debouncing
            status = ["WORKING", "STOPPED", "SCAN_QR_CODE", "WORKING", "FAILED"][arg % 5]
            return "waha", json.dumps(
                {"event": "session.status", "session": "default", "payload": {"status": status}}
            ).encode()
        case _:
            return "waha", _waha_deleted(f"m{key}")


KINDS = [
    "meta_status",
    "meta_group",
    "meta_incoming",
    "waha_outgoing",
    "waha_ack",
    "waha_del",
    "waha_session",
]
webhooks = st.tuples(
    st.sampled_from(KINDS),
    st.integers(0, 5),  # message key
    st.integers(0, 9),  # status choice
    # seconds after the previous webhook (deadlines are 5 s and 10 s, the debounce 60 s)
    st.sampled_from([0, 1, 2, 3, 5, 8, 70]),
    st.booleans(),  # sent twice (a provider retry)
)


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(dsn)
    await bulk.bulk_codecs(c)
    for provider in ("meta", "waha"):
        for name in (provider, f"{provider}2"):
            await channels.add(
                c, name, provider, token=f"t-{name}", sent_deadline_s=5, delivered_deadline_s=10
            )
    try:
        yield c
    finally:
        await c.close()


def channel_of(provider: str, key: int) -> str:
    """Each provider's keys 0-2 in one channel, the others in a second one."""
    return provider if key < 3 else f"{provider}2"


async def _append(
    conn: asyncpg.Connection, log: list[Any], start: dt.datetime, *, one_channel: bool = False
) -> None:
    """``one_channel``: every event in the provider's first channel."""
    at = start
    events = []
    for kind, key, arg, gap, twice in log:
        at += dt.timedelta(seconds=gap)
        provider, raw = body(kind, key, arg)
        e = NewEvent(
            channel=provider if one_channel else channel_of(provider, key),
            provider=provider,
            body=raw,
            received_at=at,
            content_type="application/json",
        ).with_dedup_key(None)
        events += [e, e] if twice else [e]
    await write_batch(conn, events)


async def _differences(conn: asyncpg.Connection, a: str, b: str) -> dict[str, tuple[int, int]]:
    out = {}
    for table in (t.name for t in TABLES):
        ab = await conn.fetchval(
            f"SELECT count(*) FROM (TABLE {a}.{table} EXCEPT ALL TABLE {b}.{table}) d"
        )
        ba = await conn.fetchval(
            f"SELECT count(*) FROM (TABLE {b}.{table} EXCEPT ALL TABLE {a}.{table}) d"
        )
        if ab or ba:
            out[table] = (ab, ba)
    return out


async def _anomaly_counts(conn: asyncpg.Connection, schema: str) -> set[tuple[str, str, int]]:
    rows = await conn.fetch(f"SELECT channel, kind, n FROM {schema}.anomaly_counts")
    return {(r["channel"], r["kind"], r["n"]) for r in rows}


async def _recounted(conn: asyncpg.Connection, schema: str) -> set[tuple[str, str, int]]:
    """The counts the batches' +1/-1 must add up to: the messages' anomalies now."""
    rows = await conn.fetch(
        f"SELECT channel, a AS kind, count(*) AS n FROM {schema}.messages,"
        " jsonb_array_elements_text(anomalies) AS a GROUP BY channel, a"
    )
    return {(r["channel"], r["kind"], r["n"]) for r in rows}


async def _receipt_counts(conn: asyncpg.Connection, schema: str) -> set[tuple[Any, ...]]:
    rows = await conn.fetch(
        f"SELECT channel, key, participants, delivered_to, read_by, played_by"
        f" FROM {schema}.messages WHERE participants > 0"
    )
    return {tuple(r.values()) for r in rows}


async def _receipts_recounted(conn: asyncpg.Connection, schema: str) -> set[tuple[Any, ...]]:
    """What the counts must be: distinct participants per receipt, from ``receipts``."""
    rows = await conn.fetch(
        f"SELECT channel, key, count(*),"
        f" count(*) FILTER (WHERE state IN ('delivered', 'read', 'played')),"
        f" count(*) FILTER (WHERE state IN ('read', 'played')),"
        f" count(*) FILTER (WHERE state = 'played')"
        f" FROM {schema}.receipts GROUP BY channel, key"
    )
    return {tuple(r.values()) for r in rows}


async def _fold_upserting_all(conn: asyncpg.Connection, schema: str, after: int, upto: int) -> None:
    """The projector's steps, but every message upserted (``write(copy=False)``)."""
    deadlines = await load.load_deadlines(conn)
    while events := await read(conn, after=after, limit=3, upto=upto):
        decoded = fold.decode(events)
        keys, receipt_keys = fold.message_keys(decoded)
        existing, missed = await load.load_messages(conn, schema, keys)
        receipts = await load.load_receipts(conn, schema, receipt_keys)
        runs = await load.load_runs(conn, schema, fold.instance_channels(decoded))
        batch = fold.fold(decoded, existing, missed, receipts, deadlines, runs)
        await write.write(conn, schema, batch, copy=False)
        after = events[-1].position


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    log=st.lists(webhooks, min_size=1, max_size=40),
    batch=st.integers(1, 9),
    bulk_batch=st.integers(1, 9),
    cache=st.integers(1, 4),
)
async def test_bulk_fold_equals_the_incremental_fold(
    conn: asyncpg.Connection, dsn: str, log: list[Any], batch: int, bulk_batch: int, cache: int
) -> None:
    n = next(_names)
    start = await head(conn)
    await _append(conn, log, T0 + dt.timedelta(days=n))
    end = await head(conn)
    inc, blk, ups = f"rm_inc_{n}", f"rm_bulk_{n}", f"rm_ups_{n}"
    sh2, sh4 = f"rm_sh2_{n}", f"rm_sh4_{n}"
    for schema in (inc, blk, ups, sh2, sh4):
        await conn.execute("SELECT create_read_models($1)", schema)
    try:
        projector = Projector(dsn, schema=inc, name=inc, live=False, batch_size=batch)
        if start:
            await checkpoint.advance(conn, inc, 0, start)
        await projector.catch_up(conn, upto=end)
        # the projector COPYs the messages a batch creates: the rows are those of upserts
        await _fold_upserting_all(conn, ups, start, end)
        assert await _differences(conn, inc, ups) == {}
        folded = BulkFold(conn, blk, batch_size=bulk_batch, cache_size=cache)
        assert await folded.run(start, end) == end
        assert await _differences(conn, inc, blk) == {}
        for shards, schema in ((2, sh2), (4, sh4)):
            assert await _fold_in_shards(conn, schema, start, end, shards, bulk_batch, cache) == (
                end - start
            )
            assert await _differences(conn, inc, schema) == {}, f"{shards} shards"
        assert await _anomaly_counts(conn, inc) == await _recounted(conn, inc)
        assert await _receipt_counts(conn, inc) == await _receipts_recounted(conn, inc)
        later = T0 + dt.timedelta(days=n, hours=1)
        swept = await write.sweep(conn, inc, later)
        for schema in (blk, sh2, sh4):
            assert await write.sweep(conn, schema, later) == swept
            assert await _differences(conn, inc, schema) == {}
    finally:
        for schema in (inc, blk, ups, sh2, sh4):
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def _fold_in_shards(
    conn: asyncpg.Connection,
    schema: str,
    after: int,
    upto: int,
    shards: int,
    batch: int,
    cache: int,
) -> int:
    """What ``load_log``'s workers do with tasks of ``shards`` shards, one after the other in
    this process: each shard folds into ``schema`` and keeps its totals, which are merged and
    written once at the end. Returns the events counted (each once, by its channel's shard)."""
    totals, counted = Totals(), 0
    for shard in range(shards):
        stages = Stages()
        folded = BulkFold(
            conn,
            schema,
            batch_size=batch,
            cache_size=cache,
            shard=shard,
            shards=shards,
            defer_totals=True,
            stages=stages,
        )
        await folded.run(after, upto)
        totals.merge(folded.totals)
        counted += stages.events
    await write.add_totals(conn, schema, totals)
    return counted


def _random_log(seed: int, n: int, kinds: list[str] = KINDS) -> list[Any]:
    rng = random.Random(seed)
    return [
        (
            rng.choice(kinds),
            rng.randint(0, 30),
            rng.randint(0, 9),
            rng.choice([0, 1, 2, 3, 5, 8, 70]),
            rng.random() < 0.2,
        )
        for _ in range(n)
    ]


async def _bulk_load(
    conn: asyncpg.Connection, dsn: str, schema: str, end: int, **kw: Any
) -> Stages:
    """``load_log`` into a fresh ``schema``, as a rebuild runs it (indexes deferred)."""
    await conn.execute("SELECT create_read_models($1)", schema)
    restore = await bulk.defer_indexes(conn, schema)
    stages = Stages()
    assert (
        await load_log(conn, dsn, schema, end, stages=stages, min_events_per_shard=1, **kw) == end
    )
    await bulk.restore_indexes(conn, schema, restore)
    return stages


@pytest.mark.parametrize(
    ("workers", "shards", "reader"),
    [
        (1, 1, False),
        (1, 2, False),
        (1, 4, False),
        (2, None, None),
        (2, 1, False),
        (2, 2, False),
        (2, 4, False),
        (1, 1, True),
        (2, 3, True),
    ],
)
async def test_bulk_loads_in_processes_and_shards_fold_like_one_projector(
    conn: asyncpg.Connection, dsn: str, workers: int, shards: int | None, reader: bool | None
) -> None:
    """``load_log`` with 1 or 2 worker processes and every task in 1, 2, 3 or 4 shards (None:
    as it chooses), each shard reading its group's events itself or fed by one reader of the
    group, into one fresh schema: every table equals the incremental fold's, and every event
    is counted once whatever the shards."""
    await _append(conn, _random_log(7, 400), T0)
    end = await head(conn)
    inc, blk = "rm_inc_shards", "rm_bulk_shards"
    await conn.execute("SELECT create_read_models($1)", inc)
    await Projector(dsn, schema=inc, name=inc, live=False, batch_size=7).catch_up(conn, upto=end)
    stages = await _bulk_load(conn, dsn, blk, end, workers=workers, shards=shards, reader=reader)
    assert stages.events == end
    if reader:  # the readers read and decoded, the folders folded
        assert stages.seconds["decode"] > 0 and stages.seconds["receive"] > 0
    assert await _differences(conn, inc, blk) == {}
    if (workers, shards) == (1, 1):
        # a task of several channels walks the log once for all of them
        both = "rm_bulk_both"
        await conn.execute("SELECT create_read_models($1)", both)
        async with conn.transaction():
            await BulkFold(
                conn, both, channels=["meta", "meta2", "waha", "waha2"], cache_size=5
            ).run(0, end)
        assert await _differences(conn, inc, both) == {}


async def test_a_one_channel_log_folds_on_every_worker(conn: asyncpg.Connection, dsn: str) -> None:
    """One channel holds the whole log: three workers fold it as one reader and two shards of
    that channel, at once, and the tables equal the incremental fold's (the count tables and
    channel activity, which both shards add to, included)."""
    waha = [k for k in KINDS if k.startswith("waha")]
    await _append(conn, _random_log(13, 600, waha), T0, one_channel=True)
    end = await head(conn)
    assert tasks({"waha": end}, 3) == [Task(["waha"], k, 2, end, fed=True) for k in range(2)]
    assert tasks({"waha": end}, 2) == [Task(["waha"], 0, 1, end, fed=True)]
    assert tasks({"waha": end}, 3, reader=False) == [Task(["waha"], k, 3, end) for k in range(3)]
    inc, blk = "rm_inc_one", "rm_bulk_one"
    await conn.execute("SELECT create_read_models($1)", inc)
    await Projector(dsn, schema=inc, name=inc, live=False, batch_size=9).catch_up(conn, upto=end)
    stages = await _bulk_load(conn, dsn, blk, end, workers=3)
    assert stages.events == end
    assert await _differences(conn, inc, blk) == {}
    assert await conn.fetchval(f"SELECT count(*) FROM {blk}.missed_counts") > 0


@given(
    counts=st.dictionaries(st.text(min_size=1, max_size=5), st.integers(1, 10_000), max_size=40),
    n=st.integers(1, 8),
)
def test_channel_groups_cover_every_channel_once_largest_first(
    counts: dict[str, int], n: int
) -> None:
    """Every channel in exactly one group; groups largest first; a group is either one channel
    or channels each smaller than a ``TASKS_PER_WORKER * n``-th of the log."""
    groups = channel_groups(counts, n)
    flat = [c for t in groups for c in t]
    assert sorted(flat) == sorted(counts)
    sizes = [sum(counts[c] for c in t) for t in groups]
    assert sizes == sorted(sizes, reverse=True)
    target = max(sum(counts.values()) // (TASKS_PER_WORKER * n), 1)
    for t in groups:
        assert len(t) == 1 or all(counts[c] < target for c in t)


@given(
    counts=st.dictionaries(st.text(min_size=1, max_size=5), st.integers(1, 10_000), max_size=40),
    workers=st.integers(1, 8),
    shards=st.none() | st.integers(1, 4),
    reader=st.none() | st.booleans(),
)
def test_tasks_fold_each_shard_of_each_channel_once_costliest_first(
    counts: dict[str, int], workers: int, shards: int | None, reader: bool | None
) -> None:
    """Each channel's facts in exactly one task per shard, all its tasks cut alike and fed
    alike; ``shards`` when given, else only a channel bigger than a worker's share is cut:
    fed by a reader into at most ``workers - 1`` shards (one at least), or, without a
    reader, into at most ``workers``; tasks handed out costliest first."""
    plan = tasks(counts, workers, shards, reader)
    total = sum(counts.values())
    for channel, count in counts.items():
        mine = [t for t in plan if channel in t.channels]
        n, fed = mine[0].shards, mine[0].fed
        assert sorted(t.shard for t in mine) == list(range(n))
        assert all(t.shards == n and t.fed == fed and t.channels == mine[0].channels for t in mine)
        small = len(mine[0].channels) > 1 or count * workers <= total
        if shards is not None:
            assert (n, fed) == (shards, bool(reader))
        elif small or workers < SHARD_FROM_WORKERS:
            assert (n, fed) == (1, bool(reader))
        elif reader is False:
            assert 2 <= n <= workers and not fed
        else:
            assert 1 <= n <= workers - 1 and fed
    costs = [t.cost for t in plan]
    assert costs == sorted(costs, reverse=True)


def test_a_channel_is_cut_into_shards_only_past_a_workers_share() -> None:
    assert split(1000, 1000, 4) == 4  # one channel: every worker folds a shard of it
    assert split(700, 1000, 3) == 3
    assert split(500, 1000, 3) == 2
    assert split(300, 1000, 3) == 1  # within a worker's share: a task of its own, as before
    assert split(300, 1000, 4) == 2
    assert split(1000, 1000, 2) == 2
    assert split(1000, 1000, 1) == 1  # one worker never cuts a channel


async def test_a_cold_live_projector_loads_in_bulk_then_folds_batch_by_batch(
    conn: asyncpg.Connection, dsn: str
) -> None:
    """``Projector.run`` with no checkpoint and a log past ``bulk_catchup``: the bulk load of a
    rebuild (recorded in ``rebuilds``), then the events after it one batch at a time; the
    live tables equal an incremental fold of the same log, and a projector that has a
    checkpoint never loads in bulk."""
    rng = random.Random(11)

    def some(n: int) -> list[Any]:
        return [
            (rng.choice(KINDS), rng.randint(0, 30), rng.randint(0, 9), rng.choice([0, 1, 70]), 0)
            for _ in range(n)
        ]

    await _append(conn, some(300), T0)
    first = await head(conn)
    inc = "rm_inc_cold"
    await conn.execute("SELECT create_read_models($1)", inc)
    projector = Projector(dsn, bulk_catchup=first, batch_size=50, bulk_load=bulk_load)
    task = asyncio.create_task(projector.run())
    try:
        await asyncio.wait_for(projector.wait_for(first), 120)
        assert await conn.fetchval("SELECT count(*) FROM rebuilds") == 1
        await _append(conn, some(120), T0 + dt.timedelta(days=1))
        end = await head(conn)
        await asyncio.wait_for(projector.wait_for(end), 120)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await conn.fetchval("SELECT count(*) FROM rebuilds") == 1  # the tail was not bulk
    assert await checkpoint.load(conn, LIVE_CHECKPOINT) == end
    await Projector(dsn, schema=inc, name=inc, live=False, batch_size=7).catch_up(conn, upto=end)
    now = T0 + dt.timedelta(days=30)
    for schema in ("rm", inc):
        await write.sweep(conn, schema, now)
    assert await _differences(conn, "rm", inc) == {}
    # it has a checkpoint
    assert await Projector(dsn, bulk_catchup=1, bulk_load=bulk_load).cold_start(conn) == 0


async def test_a_cancelled_load_kills_its_shard_processes(
    conn: asyncpg.Connection, dsn: str
) -> None:
    """SIGTERM during a bulk load cancels ``load_log``: its worker processes are killed (their
    transactions roll back with their connections) instead of folding on for a rebuild that
    is gone, and nothing of theirs is committed."""
    rng = random.Random(5)
    log = [(rng.choice(KINDS), rng.randint(0, 500), rng.randint(0, 9), 0, 0) for _ in range(4000)]
    await _append(conn, log, T0)
    end = await head(conn)
    blk = "rm_bulk_cancelled"
    await conn.execute("SELECT create_read_models($1)", blk)
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    task = asyncio.create_task(
        load_log(conn, dsn, blk, end, stages=Stages(), workers=2, min_events_per_shard=1)
    )
    workers: list[psutil.Process] = []
    async with asyncio.timeout(60):
        while len(workers) < 2 and not task.done():  # the pool's processes, once started
            workers = [
                p
                for p in me.children(recursive=True)
                if p.pid not in before and "spawn_main" in " ".join(p.cmdline())
            ]
            await asyncio.sleep(0.01)
    assert not task.done(), "the load ended before its workers could be seen"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []
    assert await conn.fetchval(f"SELECT count(*) FROM {blk}.timeline") == 0


async def test_a_failed_task_fails_the_load_with_its_own_error(
    conn: asyncpg.Connection, dsn: str
) -> None:
    """A worker's task that fails (here: its schema does not exist) ends the whole load with
    that task's error, from a worker process, and leaves no worker behind."""
    rng = random.Random(3)
    log = [(rng.choice(KINDS), rng.randint(0, 50), rng.randint(0, 9), 0, 0) for _ in range(300)]
    await _append(conn, log, T0)
    me = psutil.Process()
    with pytest.raises(Exception, match="does not exist"):
        await load_log(
            conn,
            dsn,
            "rm_no_such_schema",
            await head(conn),
            stages=Stages(),
            workers=2,
            min_events_per_shard=1,
        )
    assert [p for p in me.children() if "spawn_main" in " ".join(p.cmdline())] == []


@pytest.mark.parametrize("role", ["read", "fold"])
async def test_a_killed_reader_or_shard_folder_fails_the_load_and_leaves_no_process(
    conn: asyncpg.Connection, dsn: str, role: str
) -> None:
    """kill -9 of a rebuild's reader (its shards' folders find their pipes closed) or of one
    of the folders it feeds (the reader finds that pipe broken), once it is connected: the
    load fails within seconds with an error saying so, no process is left waiting on the
    other end, and nothing the load folded is committed."""
    rng = random.Random(11)
    meta = [k for k in KINDS if k.startswith("meta")]  # one channel: one reader, two folders
    log = [(rng.choice(meta), rng.randint(0, 900), rng.randint(0, 9), 0, 0) for _ in range(20000)]
    await _append(conn, log, T0, one_channel=True)
    end = await head(conn)
    blk = f"rm_bulk_killed_{role}"
    await conn.execute("SELECT create_read_models($1)", blk)
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    load = load_log(
        conn,
        dsn,
        blk,
        end,
        stages=Stages(),
        workers=2,
        shards=2,
        reader=True,
        min_events_per_shard=1,
    )
    task = asyncio.create_task(load)
    watcher = await asyncpg.connect(dsn)
    try:
        name = None
        async with asyncio.timeout(60):
            while name is None and not task.done():  # its connection names it, with its pid
                name = await watcher.fetchval(
                    "SELECT application_name FROM pg_stat_activity"
                    " WHERE application_name LIKE $1 LIMIT 1",
                    f"acklog-rebuild-{role}-%",
                )
                await asyncio.sleep(0.005)
    finally:
        await watcher.close()
    assert name is not None, "the load ended before its processes could be seen"
    spawned = [
        p
        for p in me.children(recursive=True)
        if p.pid not in before and "spawn_main" in " ".join(p.cmdline())
    ]
    assert len(spawned) == 3  # the reader and its two shards' folders
    os.kill(int(name.rsplit("-", 1)[1]), signal.SIGKILL)
    with pytest.raises(RuntimeError, match=r"killed by signal 9|reader is gone|stopped taking"):
        async with asyncio.timeout(30):
            await task
    _, alive = psutil.wait_procs(spawned, timeout=10)
    assert alive == []
    assert await conn.fetchval(f"SELECT count(*) FROM {blk}.timeline") == 0
