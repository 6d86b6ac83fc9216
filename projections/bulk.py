"""The rebuild's fold: the whole log into a fresh schema, in bulk, with flat memory.

The incremental projector upserts every message a batch touches, in the batch's transaction.
A rebuild writes into tables nobody reads yet, so it can do better and still fold exactly
the same way (the same :func:`projections.fold.fold`, batch after batch, in log order):

- the states of recently touched messages stay in memory (an LRU of ``cache_size``
  messages), so a message's acks fold onto it without reading it back or rewriting it;
- a message leaves memory only when it is evicted or at the end, and is then written once:
  by binary COPY when it is new to the table, by upsert when it had been evicted before and
  came back. A key missing from the cache is looked up only if it may have been written: a
  Bloom filter of the keys written so far (fixed size, so memory stays flat) answers "never"
  for almost every new message, which then costs no query (a false "maybe" costs one lookup
  that finds nothing; there are no false "never"s). Receipts are filtered the same way;
- timeline, instance history and quarantine rows go in by COPY as they are folded, and the
  indexes that only serve queries are built after the load
  (:func:`projections.readmodel.bulk.defer_indexes`).

Memory is bounded by the cache and one batch, whatever the length of the log.

A big log is folded by several processes at once (:func:`load_log`): messages are keyed per
channel, so tasks of whole channels touch disjoint rows of every table, and each task folds
its channels in log order exactly as one process would. The processes pull the tasks (more
tasks than processes, largest first), so none idles while another still has work. Each
process holds its own cache and filters, so memory is bounded per process.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import multiprocessing
import os
import pickle
import queue
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import msgspec
from rbloom import Bloom

from eventstore.pool import connect
from eventstore.read import channel_counts, read
from projections import fold
from projections.readmodel import bulk, load, schema_name, write
from projections.rules.deadlines import Deadlines, MissedAcks
from projections.rules.message_state import MessageState
from projections.rules.rows import Key
from projections.stages import Stages

#: (state, missed-ack bookkeeping, whether the table already holds a row for it)
Cached = tuple[MessageState, MissedAcks, bool]

#: keys a Bloom filter is sized for, and its false-positive rate at that many: 10M keys in
#: about 11 MiB; past that the rate rises (more lookups that find nothing), never wrongness
BLOOM_KEYS = 10_000_000
BLOOM_FP = 0.01


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
        #: called after each batch with the events folded so far
        self.on_batch = on_batch
        self.folded = 0
        self.cache: dict[Key, Cached] = {}  # insertion order = least recently folded first
        #: every message key written to the table so far (evicted once at least)
        self.written = Bloom(BLOOM_KEYS, BLOOM_FP)
        #: every receipt key written so far
        self.written_receipts = Bloom(BLOOM_KEYS, BLOOM_FP)

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
        """The whole log, or a shard's channels: one channel by the ``(channel, position)``
        index, several in one walk of the log by position that skips the others' events.

        Measured on 1M events of 11 channels: reading channel after channel by that index cost
        PostgreSQL ~12 µs per event (each heap page is visited once per channel, long after
        the buffer cache dropped it), the whole log by position ~3 µs, and a walk for a
        task's channels ~3.5-7 µs per event it returns, depending on their share.
        """
        with self.stages.timed("load"):
            deadlines = await load.load_deadlines(self.conn)
        position = after
        if self.channels is None:
            position = await self._stream(after, upto, deadlines)
        elif len(self.channels) == 1:
            await self._stream(after, upto, deadlines, channel=self.channels[0])
        else:
            await self._stream(after, upto, deadlines, channels=self.channels)
        with self.stages.timed("write"):
            await self._flush(len(self.cache))
        return upto if self.channels is not None else position

    async def _stream(
        self,
        after: int,
        upto: int,
        deadlines: dict[str, Deadlines],
        *,
        channel: str | None = None,
        channels: Sequence[str] | None = None,
    ) -> int:
        """Fold ``after < position <= upto`` of one channel, some or all; the last position."""
        timed = self.stages.timed
        position = after
        while True:
            with timed("read"):
                events = await read(
                    self.conn,
                    after=position,
                    limit=self.batch_size,
                    upto=upto,
                    channel=channel,
                    channels=channels,
                    for_fold=True,
                )
            if not events:
                return position
            with timed("decode"):
                decoded = fold.decode(events)
            with timed("load"):
                keys, receipt_keys = fold.message_keys(decoded)
                existing: dict[Key, MessageState] = {}
                existing_missed: dict[Key, MissedAcks] = {}
                misses = []
                written = self.written
                for k in keys:
                    hit = self.cache.get(k)
                    if hit is not None:
                        existing[k], existing_missed[k] = hit[0], hit[1]
                    elif k in written:
                        misses.append(k)
                loaded, loaded_missed = await load.load_messages(self.conn, self.schema, misses)
                existing.update(loaded)
                existing_missed.update(loaded_missed)
                wr = self.written_receipts
                receipts = await load.load_receipts(
                    self.conn, self.schema, [k for k in receipt_keys if k in wr]
                )
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
                self.written_receipts.update(batch.receipts)
                if len(cache) > self.cache_size:
                    await self._flush(len(cache) - self.cache_size)
            position = events[-1].position
            self.stages.events += len(events)
            self.stages.batches += 1
            self.folded += len(events)
            if self.on_batch is not None:
                self.on_batch(self.folded)

    async def _flush(self, n: int) -> None:
        """Write the ``n`` least recently folded messages and forget them."""
        new: list[tuple[MessageState, MissedAcks]] = []
        again: dict[Key, MessageState] = {}
        again_missed: dict[Key, MissedAcks] = {}
        cache = self.cache
        evicted = list(itertools.islice(cache, n))
        self.written.update(evicted)
        for k in evicted:
            state, missed, stored = cache.pop(k)
            if stored:
                again[k], again_missed[k] = state, missed
            else:
                new.append((state, missed))
        await write.copy_messages(self.conn, self.schema, new)
        await write.upsert_messages(self.conn, self.schema, again, again_missed)


#: below this many events per shard, one process folds everything (start-up costs ~1 s)
MIN_EVENTS_PER_SHARD = 50_000


#: tasks per worker process (see :func:`shards`): 4 balanced better on the bench's mix, but
#: four walks of the log cost PostgreSQL more than the balance saved (1M events: 13-15k vs
#: 11-20k events/s on a noisy machine; PostgreSQL backends 29-30 s vs 19-26 s of CPU)
TASKS_PER_WORKER = 2


def shards(counts: dict[str, int], n: int) -> list[list[str]]:
    """Whole channels into tasks for ``n`` processes, largest first.

    The processes pull tasks as they finish one, so there are more tasks than processes (a
    process that drew cheap channels takes another task instead of idling while the last one
    runs), but few: a task of several channels walks the whole log (see ``BulkFold._run``).
    A channel with at least a ``2 n``-th of the events is a task of its own, smaller channels
    are packed into tasks of about that size.
    """
    total = sum(counts.values())
    target = max(total // max(TASKS_PER_WORKER * n, 1), 1)
    tasks: list[tuple[int, list[str]]] = []
    small: list[str] = []
    size = 0
    for channel, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if count >= target:
            tasks.append((count, [channel]))
            continue
        small.append(channel)
        size += count
        if size >= target:
            tasks.append((size, small))
            small, size = [], 0
    if small:
        tasks.append((size, small))
    return [t for _, t in sorted(tasks, key=lambda t: -t[0])]


def default_workers() -> int:
    """The cores, at most 4 (the service passes ``ACKLOG_REBUILD_WORKERS`` when set)."""
    return min(os.cpu_count() or 1, 4)


async def _shard(dsn: str, schema: str, channels: list[str], upto: int, folded: Any) -> Stages:
    stages = Stages(cpu=True)
    conn = await connect(dsn)
    last = 0

    def report(done: int) -> None:
        nonlocal last
        with folded.get_lock():
            folded.value += done - last
        last = done

    try:
        await bulk.bulk_codecs(conn)
        async with conn.transaction():
            await BulkFold(conn, schema, channels=channels, stages=stages, on_batch=report).run(
                0, upto
            )
    finally:
        await conn.close()
    return stages


#: what a worker sends back per task: ("done", (events, seconds by stage, CPU by stage)) or
#: ("failed", the exception, or a RuntimeError with its text when it cannot be pickled)
Outcome = tuple[str, Any]


def _worker(dsn: str, schema: str, upto: int, tasks: Any, results: Any, folded: Any) -> None:
    """A worker process: fold tasks from ``tasks`` until the ``None`` at its end, or until one
    fails (the load is lost then; the parent stops the others)."""
    while (channels := tasks.get()) is not None:
        try:
            stages = asyncio.run(_shard(dsn, schema, channels, upto, folded))
        except BaseException as exc:  # sent to the parent, which raises it
            try:
                pickle.dumps(exc)
            except Exception:  # e.g. a driver error that will not pickle
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            results.put(("failed", exc))
            return
        results.put(("done", (stages.events, dict(stages.seconds), dict(stages.cpu))))


def _kill(processes: list[Any]) -> None:
    """Kill the workers and reap them: their tasks' transactions roll back with their
    connections (a cancelled load, e.g. SIGTERM, or a task that failed)."""
    for p in processes:
        if p.is_alive():
            p.kill()
    for p in processes:
        p.join()


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
    """Fold the log up to ``upto`` into ``schema`` (committed; indexes deferred by the caller).

    A big log is folded by ``workers`` processes, each pulling tasks of whole channels
    (:func:`shards`) and committing each task on its own connection; this process only hands
    them out and reports progress (``on_batch`` with about how many events are folded).
    """
    n = min(workers or default_workers(), max(upto // max(min_events_per_shard, 1), 1))
    counts = await channel_counts(conn, upto) if n > 1 else {}
    tasks = shards(counts, n) if n > 1 else []
    if len(tasks) <= 1:
        async with conn.transaction():
            return await BulkFold(conn, schema, stages=stages, on_batch=on_batch).run(0, upto)
    context = multiprocessing.get_context("spawn")
    folded = context.Value("q", 0)
    todo, results = context.Queue(), context.Queue()
    for t in tasks:
        todo.put(t)
    processes = [
        context.Process(
            target=_worker, args=(dsn, schema, upto, todo, results, folded), daemon=True
        )
        for _ in range(min(n, len(tasks)))
    ]
    for _ in processes:
        todo.put(None)
    outcomes: list[Outcome] = []
    try:
        for p in processes:
            p.start()
        while len(outcomes) < len(tasks):
            try:
                outcomes.append(await asyncio.to_thread(results.get, True, 0.5))
            except queue.Empty:
                if not any(p.is_alive() for p in processes) and results.empty():
                    raise RuntimeError("rebuild: the fold's worker processes died") from None
            if on_batch is not None:
                on_batch(int(folded.value))
            if outcomes and outcomes[-1][0] == "failed":
                raise outcomes[-1][1]
    finally:
        _kill(processes)  # all done: they are leaving anyway; else stop them
        todo.cancel_join_thread()  # what is left of it has no reader any more
        for q in (todo, results):
            q.close()
    for _, (events, seconds, cpu) in outcomes:
        stages.events += events
        for k, v in seconds.items():
            stages.add(k, v, cpu.get(k, 0.0))
    return upto
