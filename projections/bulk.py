"""The rebuild's fold: the whole log into a fresh schema, in bulk, with flat memory.

The incremental projector upserts every message a batch touches, in the batch's transaction.
A rebuild writes into tables nobody reads yet, so it can do better and still fold exactly
the same way (the same :func:`projections.fold.fold`, batch after batch, in log order):

- the states of recently touched messages stay in memory (an LRU of ``cache_size``
  messages), so a message's acks fold onto it without reading it back or rewriting it;
- a message leaves memory only when it is evicted or at the end, and is then written once:
  by binary COPY when it is new to the table, by upsert when it had been evicted before and
  came back (it is looked up only then: a key missing from the cache is read from the table);
- timeline, instance history and quarantine rows go in by COPY as they are folded, and the
  indexes that only serve queries are built after the load
  (:func:`projections.readmodel.bulk.defer_indexes`).

Memory is bounded by the cache and one batch, whatever the length of the log.

A big log is folded by several processes at once (:func:`load_log`): messages are keyed per
channel, so shards of whole channels (balanced by their event counts) touch disjoint rows
of every table, and each folds its channels in log order exactly as one process would.
Each process holds its own cache, so memory is bounded per process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import itertools
import multiprocessing
import os
from collections.abc import Callable, Sequence

import asyncpg
import msgspec

from eventstore.pool import connect
from eventstore.read import channel_counts, read
from projections import fold
from projections.message_state import MessageState
from projections.readmodel import bulk, load, schema_name, write
from projections.readmodel.deadlines import MissedAcks
from projections.readmodel.load import Key
from projections.stages import Stages

#: (state, missed-ack bookkeeping, whether the table already holds a row for it)
Cached = tuple[MessageState, MissedAcks, bool]


class BulkFold:
    def __init__(
        self,
        conn: asyncpg.Connection,
        schema: str,
        *,
        batch_size: int = 5000,
        cache_size: int = 20_000,
        stages: Stages | None = None,
        on_batch: Callable[[int], None] | None = None,
        channels: Sequence[str] | None = None,
    ) -> None:
        self.conn = conn
        self.channels = channels
        self.schema = schema_name(schema)
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.stages = stages or Stages()
        self.on_batch = on_batch
        self.cache: dict[Key, Cached] = {}  # insertion order = least recently folded first

    async def run(self, after: int, upto: int) -> int:
        """Fold ``after < position <= upto``; returns the last position folded.

        The cyclic garbage collector is paused meanwhile: the cache keeps tens of thousands
        of long-lived objects that it would otherwise traverse again and again (measured:
        a third of the CPU); nothing here builds cycles, and one collection runs at the end.
        """
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return await self._run(after, upto)
        finally:
            if was_enabled:
                gc.enable()
            gc.collect()

    async def _run(self, after: int, upto: int) -> int:
        timed = self.stages.timed
        with timed("load"):
            deadlines = await load.load_deadlines(self.conn)
        position = after
        while True:
            with timed("read"):
                events = await read(
                    self.conn,
                    after=position,
                    limit=self.batch_size,
                    upto=upto,
                    channels=self.channels,
                )
            if not events:
                break
            with timed("decode"):
                decoded = fold.decode(events)
            with timed("load"):
                keys, receipt_keys = fold.message_keys(decoded)
                existing: dict[Key, MessageState] = {}
                existing_missed: dict[Key, MissedAcks] = {}
                misses = []
                for k in keys:
                    hit = self.cache.get(k)
                    if hit is None:
                        misses.append(k)
                    else:
                        existing[k], existing_missed[k] = hit[0], hit[1]
                loaded, loaded_missed = await load.load_messages(self.conn, self.schema, misses)
                existing.update(loaded)
                existing_missed.update(loaded_missed)
                receipts = await load.load_receipts(self.conn, self.schema, receipt_keys)
                runs = await load.load_runs(self.conn, self.schema, fold.instance_channels(decoded))
            with timed("fold"):
                batch = fold.fold(decoded, existing, existing_missed, receipts, deadlines, runs)
                cache = self.cache
                for k, state in batch.messages.items():
                    old = cache.pop(k, None)
                    cache[k] = (state, batch.missed[k], k in loaded or (old is not None and old[2]))
            with timed("write"):
                rest = msgspec.structs.replace(batch, messages={}, missed={})
                await write.write(self.conn, self.schema, rest)
                if len(cache) > self.cache_size:
                    await self._flush(len(cache) - self.cache_size)
            position = events[-1].position
            self.stages.events += len(events)
            self.stages.batches += 1
            if self.on_batch is not None:
                self.on_batch(position)
        with timed("write"):
            await self._flush(len(self.cache))
        return upto if self.channels is not None else position

    async def _flush(self, n: int) -> None:
        """Write the ``n`` least recently folded messages and forget them."""
        new: list[tuple[MessageState, MissedAcks]] = []
        again: dict[Key, MessageState] = {}
        again_missed: dict[Key, MissedAcks] = {}
        cache = self.cache
        for k in list(itertools.islice(cache, n)):
            state, missed, stored = cache.pop(k)
            if stored:
                again[k], again_missed[k] = state, missed
            else:
                new.append((state, missed))
        await write.copy_messages(self.conn, self.schema, new)
        await write.upsert_messages(self.conn, self.schema, again, again_missed)


#: below this many events per shard, one process folds everything (start-up costs ~1 s)
MIN_EVENTS_PER_SHARD = 50_000


def shards(counts: dict[str, int], n: int) -> list[list[str]]:
    """Whole channels into at most ``n`` groups of similar event counts (largest first)."""
    groups: list[tuple[int, list[str]]] = [(0, []) for _ in range(max(n, 1))]
    for channel, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        i = min(range(len(groups)), key=lambda j: groups[j][0])
        groups[i] = (groups[i][0] + count, [*groups[i][1], channel])
    return [g for _, g in groups if g]


def default_workers() -> int:
    return int(os.environ.get("ACKLOG_REBUILD_WORKERS") or min(os.cpu_count() or 1, 4))


async def _shard(dsn: str, schema: str, channels: list[str], upto: int) -> Stages:
    stages = Stages(cpu=True)
    conn = await connect(dsn)
    try:
        await bulk.bulk_codecs(conn)
        async with conn.transaction():
            await BulkFold(conn, schema, channels=channels, stages=stages).run(0, upto)
    finally:
        await conn.close()
    return stages


def _shard_main(
    dsn: str, schema: str, channels: list[str], upto: int
) -> tuple[int, dict[str, float], dict[str, float]]:
    stages = asyncio.run(_shard(dsn, schema, channels, upto))
    return stages.events, dict(stages.seconds), dict(stages.cpu)


async def load_log(
    conn: asyncpg.Connection,
    dsn: str,
    schema: str,
    upto: int,
    *,
    stages: Stages,
    on_batch: Callable[[int], None] | None = None,
    workers: int | None = None,
    min_events_per_shard: int = MIN_EVENTS_PER_SHARD,
) -> int:
    """Fold the log up to ``upto`` into ``schema`` (committed; indexes deferred by the caller),
    in shards of channels over ``workers`` processes when the log is big enough."""
    n = min(workers or default_workers(), max(upto // max(min_events_per_shard, 1), 1))
    groups = shards(await channel_counts(conn, upto), n) if n > 1 else []
    if len(groups) <= 1:
        async with conn.transaction():
            return await BulkFold(conn, schema, stages=stages, on_batch=on_batch).run(0, upto)
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(len(groups) - 1, mp_context=context) as pool:
        others = [loop.run_in_executor(pool, _shard_main, dsn, schema, g, upto) for g in groups[1:]]
        try:
            async with conn.transaction():
                await BulkFold(
                    conn, schema, stages=stages, on_batch=on_batch, channels=groups[0]
                ).run(0, upto)
        finally:
            results = await asyncio.gather(*others, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
        events, seconds, cpu = r
        stages.events += events
        for k, v in seconds.items():
            stages.add(k, v, cpu.get(k, 0.0))
    return upto
