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

A big log is folded by several processes at once (:func:`load_log`). A task is a set of
channels and one shard of them by message key (:func:`tasks`, :mod:`projections.shards`):
small channels packed together whole, a channel bigger than a worker's share cut into shards,
so that one busy channel folds on every worker. Each task reads and decodes all its channels'
events and folds only its shard's facts, in log order, exactly as one process would. Its
messages, receipts and timeline (by key), instance history, status and quarantine (by
channel) are rows no other task writes; what every task adds to (the count tables, channel
activity) is gathered per task (:class:`projections.rules.rows.Totals`) and written once by
the parent, so the tasks' transactions never wait on each other. The processes pull the tasks
(costliest first), so none idles while another still has work. Each process holds its own
cache and filters, one task at a time, so memory is bounded per process.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
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
from projections.rules.rows import Key, Totals
from projections.shards import select
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
        shard: int = 0,
        shards: int = 1,
        defer_totals: bool = False,
    ) -> None:
        self.conn = conn
        self.channels = channels
        #: fold only shard ``shard`` of ``shards`` of those events (``projections.shards``)
        self.shard, self.shards = shard, shards
        #: what the batches add to the count tables and channel activity, written once at
        #: the end of :meth:`run`, or, with ``defer_totals``, left to the caller (a task's
        #: totals are merged with the others' and written by :func:`load_log`)
        self.totals = Totals()
        self.defer_totals = defer_totals
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
            if not self.defer_totals:
                await write.add_totals(self.conn, self.schema, self.totals)
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
            if self.shards > 1:  # every event is read and decoded: the key is inside
                with timed("select"):
                    decoded = select(decoded, self.shard, self.shards)
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
                self.totals.add(batch)
                rest = msgspec.structs.replace(
                    batch,
                    messages={},
                    missed={},
                    newly_missed=[],
                    anomaly_deltas=[],
                    new_failures=[],
                    activity=[],
                )
                await write.write(self.conn, self.schema, rest)
                self.written_receipts.update(batch.receipts)
                if len(cache) > self.cache_size:
                    await self._flush(len(cache) - self.cache_size)
            position = events[-1].position
            # an event counts in one shard only (its channel's), so shards add up to the log
            counted = len(events) if self.shards == 1 else sum(d.counted for d in decoded)
            self.stages.events += counted
            self.stages.batches += 1
            self.folded += counted
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


#: below this many events per worker process, one process folds everything (start-up ~1 s)
MIN_EVENTS_PER_SHARD = 50_000


#: tasks per worker process (see :func:`channel_groups`): 4 balanced better on the bench's
#: mix, but four walks of the log cost PostgreSQL more than the balance saved (1M events:
#: 13-15k vs 11-20k events/s on a noisy machine; PostgreSQL backends 29-30 s vs 19-26 s of CPU)
TASKS_PER_WORKER = 2

#: the share of a task's CPU (in its process) that reading and decoding its channels' events
#: takes, measured on a one-channel Meta log (~13 of ~32 µs per event): every shard of a
#: channel pays it for all the channel's events, and only the rest is divided among them
READ_SHARE = 0.4


class Task(msgspec.Struct, frozen=True):
    """A worker's task: the events of ``channels``, of which it folds shard ``shard`` of
    ``shards`` (:func:`projections.shards.select`); ``events``: how many its channels hold."""

    channels: list[str]
    shard: int = 0
    shards: int = 1
    events: int = 0

    @property
    def cost(self) -> float:
        """About what it costs, in events folded by a task of its own (see READ_SHARE)."""
        return self.events * (READ_SHARE + (1 - READ_SHARE) / self.shards)


def channel_groups(counts: dict[str, int], n: int) -> list[list[str]]:
    """Whole channels into groups for ``n`` processes, largest first.

    The processes pull tasks as they finish one, so there are more tasks than processes (a
    process that drew cheap channels takes another task instead of idling while the last one
    runs), but few: a task of several channels walks the whole log (see ``BulkFold._run``).
    A channel with at least a ``2 n``-th of the events is a group of its own, smaller channels
    are packed into groups of about that size.
    """
    total = sum(counts.values())
    target = max(total // max(TASKS_PER_WORKER * n, 1), 1)
    groups: list[tuple[int, list[str]]] = []
    small: list[str] = []
    size = 0
    for channel, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if count >= target:
            groups.append((count, [channel]))
            continue
        small.append(channel)
        size += count
        if size >= target:
            groups.append((size, small))
            small, size = [], 0
    if small:
        groups.append((size, small))
    return [g for _, g in sorted(groups, key=lambda g: -g[0])]


#: the fewest workers with which a big channel is cut into shards on its own (``split``)
SHARD_FROM_WORKERS = 2


def split(events: int, total: int, workers: int) -> int:
    """Into how many shards a channel of ``events`` of the ``total`` is cut: one per worker's
    share of the log it holds (rounded up), at most ``workers``. A channel within one
    worker's share stays whole; a log of one channel is cut in ``workers`` shards, all
    folding at once. No more than that: each shard reads and decodes all the channel's
    events (the message key is inside the body), so every shard past the workers costs a read
    of the channel and buys no core. Nor below ``SHARD_FROM_WORKERS`` workers. Measured on 2
    cores, where PostgreSQL takes its share of the same two (make bench, quiet, 500k events of
    one channel): 2 shards 1.10x one process, 4 shards 0.74x."""
    if workers < SHARD_FROM_WORKERS or events * workers <= total:
        return 1
    return min(workers, math.ceil(events * workers / total))


def tasks(counts: dict[str, int], workers: int, shards: int | None = None) -> list[Task]:
    """The tasks of a bulk load by ``workers`` processes, costliest first: the channel
    groups (:func:`channel_groups`), a group of one big channel cut into :func:`split`
    shards, or every group into ``shards`` when given (the bench compares 1, 2 and 4)."""
    total = sum(counts.values())
    out: list[Task] = []
    for group in channel_groups(counts, workers):
        events = sum(counts[c] for c in group)
        n = shards or (split(events, total, workers) if len(group) == 1 else 1)
        out += [Task(group, k, n, events) for k in range(n)]
    return sorted(out, key=lambda t: -t.cost)


def default_workers() -> int:
    """The cores, at most 4 (the service passes ``ACKLOG_REBUILD_WORKERS`` when set)."""
    return min(os.cpu_count() or 1, 4)


async def _task(dsn: str, schema: str, task: Task, upto: int, folded: Any) -> tuple[Stages, Totals]:
    """Fold one task on a connection of its own, committed; its totals are left to the parent."""
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
            folder = BulkFold(
                conn,
                schema,
                channels=task.channels,
                shard=task.shard,
                shards=task.shards,
                defer_totals=True,
                stages=stages,
                on_batch=report,
            )
            await folder.run(0, upto)
    finally:
        await conn.close()
    return stages, folder.totals


#: what a worker sends back per task: ("done", (events, seconds by stage, CPU by stage,
#: totals)) or ("failed", the exception, or a RuntimeError with its text when it cannot be
#: pickled)
Outcome = tuple[str, Any]


def _worker(dsn: str, schema: str, upto: int, tasks: Any, results: Any, folded: Any) -> None:
    """A worker process: fold tasks from ``tasks`` until the ``None`` at its end, or until one
    fails (the load is lost then; the parent stops the others)."""
    while (task := tasks.get()) is not None:
        try:
            stages, totals = asyncio.run(_task(dsn, schema, task, upto, folded))
        except BaseException as exc:  # sent to the parent, which raises it
            try:
                pickle.dumps(exc)
            except Exception:  # e.g. a driver error that will not pickle
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            results.put(("failed", exc))
            return
        results.put(("done", (stages.events, dict(stages.seconds), dict(stages.cpu), totals)))


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
    shards: int | None = None,
) -> int:
    """Fold the log up to ``upto`` into ``schema`` (committed; indexes deferred by the caller).

    A big log is folded by ``workers`` processes, each pulling tasks (:func:`tasks`: whole
    channels, a big one cut in shards by message key, or every group in ``shards`` when
    given) and committing each task on its own connection; this process only hands them
    out, reports progress (``on_batch`` with about how many events are folded) and, once
    all are done, writes the count tables and channel activity from their merged totals.
    Shards of one channel thus never write the same row: their transactions, each a whole
    task long, would otherwise wait on each other's counter rows until commit.
    """
    n = min(workers or default_workers(), max(upto // max(min_events_per_shard, 1), 1))
    split_anyway = shards is not None and shards > 1
    plan = tasks(await channel_counts(conn, upto), n, shards) if n > 1 or split_anyway else []
    if len(plan) <= 1:
        async with conn.transaction():
            return await BulkFold(conn, schema, stages=stages, on_batch=on_batch).run(0, upto)
    context = multiprocessing.get_context("spawn")
    folded = context.Value("q", 0)
    todo, results = context.Queue(), context.Queue()
    for t in plan:
        todo.put(t)
    processes = [
        context.Process(
            target=_worker, args=(dsn, schema, upto, todo, results, folded), daemon=True
        )
        for _ in range(min(n, len(plan)))
    ]
    for _ in processes:
        todo.put(None)
    outcomes: list[Outcome] = []
    try:
        for p in processes:
            p.start()
        while len(outcomes) < len(plan):
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
    totals = Totals()
    for _, (events, seconds, cpu, part) in outcomes:
        stages.events += events
        for k, v in seconds.items():
            stages.add(k, v, cpu.get(k, 0.0))
        totals.merge(part)
    async with conn.transaction():
        with stages.timed("write"):
            await write.add_totals(conn, schema, totals)
    return upto
