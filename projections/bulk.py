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
import contextlib
import gc
import itertools
import math
import multiprocessing
import os
import pickle
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import asyncpg
import msgspec
from rbloom import Bloom

from eventstore.events import StoredEvent
from eventstore.pool import connect
from eventstore.read import channel_counts, read
from projections import fold
from projections.readmodel import bulk, load, schema_name, write
from projections.rules.deadlines import Deadlines, MissedAcks
from projections.rules.message_state import MessageState
from projections.rules.rows import Key, Totals
from projections.shards import divide, select
from projections.stages import Stages

#: (state, missed-ack bookkeeping, whether the table already holds a row for it)
Cached = tuple[MessageState, MissedAcks, bool]

#: keys a Bloom filter is sized for, and its false-positive rate at that many: 10M keys in
#: about 11 MiB; past that the rate rises (more lookups that find nothing), never wrongness
BLOOM_KEYS = 10_000_000
BLOOM_FP = 0.01


async def _read_batch(
    conn: asyncpg.Connection, channels: Sequence[str] | None, after: int, upto: int, limit: int
) -> list[StoredEvent]:
    """Up to ``limit`` events of ``channels`` (None: all) with ``after < position <= upto``,
    as a fold reads them: one channel by its index, several in one walk of the log."""
    one = channels[0] if channels is not None and len(channels) == 1 else None
    return await read(
        conn,
        after=after,
        limit=limit,
        upto=upto,
        channel=one,
        channels=channels if one is None else None,
        for_fold=True,
    )


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
        source: Connection | None = None,
        side: asyncpg.Connection | None = None,
    ) -> None:
        self.conn = conn
        #: a second connection that appends the timeline (in a transaction of its own, which
        #: the caller commits after :meth:`run`): each batch's COPY runs while the next batch
        #: folds, instead of the fold waiting for PostgreSQL to take it
        self.side = side
        self._timeline: asyncio.Future[None] | None = None
        self.channels = channels
        #: where the decoded batches come from: the log itself (None), or a reader process
        #: that reads and decodes them once for every shard (:func:`read_for_shards`)
        self.source = source
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
        if self.source is not None:
            batches = self._received(self.source)
        else:
            batches = self._read(after, upto)
        try:
            position = await self._stream(batches, deadlines, after)
            with self.stages.timed("write"):
                await self._timeline_written()
        finally:
            if self._timeline is not None:  # failed meanwhile: stop the COPY before rollback
                pending, self._timeline = self._timeline, None
                pending.cancel()
                await asyncio.wait([pending])
                if not pending.cancelled():
                    pending.exception()  # retrieved: the error that ends the fold is ours
        with self.stages.timed("write"):
            await self._flush(len(self.cache))
            if not self.defer_totals:
                await write.add_totals(self.conn, self.schema, self.totals)
        return upto if self.channels is not None else position

    async def _read(
        self, after: int, upto: int
    ) -> AsyncIterator[tuple[int, list[fold.Decoded], int]]:
        """The log's batches ``after < position <= upto`` of this fold's channels, decoded,
        with this shard's part selected: ``(last position, part, events it counts)``."""
        timed = self.stages.timed
        position = after
        while True:
            with timed("read"):
                events = await _read_batch(
                    self.conn, self.channels, position, upto, self.batch_size
                )
            if not events:
                return
            with timed("decode"):
                decoded = fold.decode(events)
            if self.shards > 1:  # every event is read and decoded: the key is inside
                with timed("select"):
                    decoded = select(decoded, self.shard, self.shards)
            position = events[-1].position
            # an event counts in one shard only (its channel's), so shards add up to the log
            yield position, decoded, len(events) if self.shards == 1 else _counted(decoded)

    async def _received(
        self, source: Connection
    ) -> AsyncIterator[tuple[int, list[fold.Decoded], int]]:
        """The batches a reader sends this shard (:func:`read_for_shards`), until its end."""
        while True:
            with self.stages.timed("receive"):
                try:
                    data = source.recv_bytes()
                except EOFError:
                    raise RuntimeError("rebuild: this shard's reader is gone") from None
                position, decoded = _PARTS.decode(data)
            if position < 0:
                return
            yield position, decoded, _counted(decoded)

    async def _stream(
        self,
        batches: AsyncIterator[tuple[int, list[fold.Decoded], int]],
        deadlines: dict[str, Deadlines],
        after: int,
    ) -> int:
        """Fold the decoded batches in order; the last position folded (``after``: none)."""
        timed = self.stages.timed
        last = after
        async for last, decoded, counted in batches:  # noqa: B007 (the last is returned)
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
                    timeline=batch.timeline if self.side is None else [],
                )
                if self.side is not None:
                    await self._timeline_written()
                    self._timeline = asyncio.ensure_future(
                        write.copy_timeline(self.side, self.schema, batch.timeline)
                    )
                await write.write(self.conn, self.schema, rest)
                self.written_receipts.update(batch.receipts)
                if len(cache) > self.cache_size:
                    await self._flush(len(cache) - self.cache_size)
            self.stages.events += counted
            self.stages.batches += 1
            self.folded += counted
            if self.on_batch is not None:
                self.on_batch(self.folded)
        return last

    async def _timeline_written(self) -> None:
        """Wait for the last batch's timeline COPY on the side connection (raise its error)."""
        if self._timeline is not None:
            pending, self._timeline = self._timeline, None
            await pending

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
    ``shards`` (:func:`projections.shards.select`); ``events``: how many its channels hold;
    ``fed``: its group's events are read and decoded once, by a reader process that sends
    each shard its part (:func:`read_for_shards`), instead of by every shard itself."""

    channels: list[str]
    shard: int = 0
    shards: int = 1
    events: int = 0
    fed: bool = False

    @property
    def cost(self) -> float:
        """About what it costs, in events folded by a task of its own (see READ_SHARE)."""
        read = 0.0 if self.fed else READ_SHARE
        return self.events * (read + (1 - READ_SHARE) / self.shards)


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


def tasks(
    counts: dict[str, int], workers: int, shards: int | None = None, reader: bool | None = None
) -> list[Task]:
    """The tasks of a bulk load by ``workers`` processes, costliest first: the channel groups
    (:func:`channel_groups`), each whole, or every group in ``shards`` when given (the bench
    compares 1, 2 and 4). A group of one channel bigger than a worker's share gets the
    :func:`split` cores it holds: unless ``reader`` is False, as one reader and a folder
    per other core (at least one: reading and folding then overlap in two processes), else
    as that many shards that each read the channel. ``reader`` True: every group is fed."""
    total = sum(counts.values())
    out: list[Task] = []
    for group in channel_groups(counts, workers):
        events = sum(counts[c] for c in group)
        cores = split(events, total, workers) if len(group) == 1 else 1
        if shards is not None:
            n, fed = shards, bool(reader)
        elif cores > 1 and reader is not False:
            n, fed = max(cores - 1, 1), True
        else:
            n, fed = cores, bool(reader)
        out += [Task(group, k, n, events, fed) for k in range(n)]
    return sorted(out, key=lambda t: -t.cost)


def default_workers() -> int:
    """The cores, at most 4 (the service passes ``ACKLOG_REBUILD_WORKERS`` when set)."""
    return min(os.cpu_count() or 1, 4)


async def _task(
    dsn: str,
    schema: str,
    task: Task,
    upto: int,
    progress: Progress,
    source: Connection | None = None,
) -> tuple[Stages, Totals]:
    """Fold one task on a connection of its own, committed; its totals are left to the parent.
    ``source``: its decoded batches come from a reader process instead of the log."""
    folded, slot = progress
    stages = Stages(cpu=True)
    conn = await connect(dsn, server_settings={"application_name": _name("fold")})
    last = 0

    def report(done: int) -> None:
        nonlocal last
        folded[slot] += done - last  # this process's own slot: no lock to die holding
        last = done

    # a fed folder is its pipeline's slowest stage: it appends the timeline on a second
    # connection, so the COPY overlaps the next batch's fold (1M events of one channel,
    # 3 rounds: 1.01-1.10x, median 1.07x; a task that reads for itself: 0.93-1.01x)
    side = None
    if source is not None:
        side = await connect(dsn, server_settings={"application_name": _name("fold")})
    try:
        await bulk.bulk_codecs(conn)
        async with conn.transaction(), side.transaction() if side else contextlib.nullcontext():
            folder = BulkFold(
                conn,
                schema,
                channels=task.channels,
                shard=task.shard,
                shards=task.shards,
                defer_totals=True,
                stages=stages,
                on_batch=report,
                source=source,
                side=side,
            )
            await folder.run(0, upto)
    finally:
        if side is not None:
            await side.close()
        await conn.close()
    return stages, folder.totals


#: a reader's message to a shard's folder: msgpack of (the last position read, the shard's
#: part of that batch, :func:`projections.shards.divide`); position -1 ends the stream
_PARTS = msgspec.msgpack.Decoder(tuple[int, list[fold.Decoded]])
_ENCODE = msgspec.msgpack.Encoder().encode
_END = _ENCODE((-1, []))

#: a reader decodes a batch in slices of this many events and lets its connection take the
#: next batch's rows in between (they would otherwise wait in the socket until it is done)
DECODE_SLICE = 500

#: encoded batches a reader keeps ready for each shard while its folder is busy
READ_AHEAD = 2


def _name(role: str) -> str:
    """A worker's ``application_name``: ``acklog-rebuild-<read|fold>-<its pid>``, so that
    ``pg_stat_activity`` tells which process holds which connection."""
    return f"acklog-rebuild-{role}-{os.getpid()}"


def _counted(decoded: list[fold.Decoded]) -> int:
    """How many events a shard's part counts (each event counts in one shard: its channel's)."""
    return sum(d.counted for d in decoded)


def _slim(d: fold.Decoded) -> fold.Decoded:
    """What a folder needs of a decoded event: its facts, not its body or headers."""
    return msgspec.structs.replace(d, event=msgspec.structs.replace(d.event, body=b"", headers={}))


class _Sender:
    """Sends one shard's batches from a thread of its own, ``READ_AHEAD`` deep, so that the
    reader decodes the next batch while a folder is still folding (a pipe holds 64 KiB)."""

    def __init__(self, out: Connection) -> None:
        self.out = out
        self.queue: queue.Queue[bytes | None] = queue.Queue(READ_AHEAD)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self) -> None:
        try:
            while (data := self.queue.get()) is not None:
                self.out.send_bytes(data)
            self.out.send_bytes(_END)
        except BaseException as exc:  # the folder is gone: the reader raises it
            self.error = exc

    def _check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"rebuild: a shard's folder stopped taking batches ({self.error!r})")

    def put(self, data: bytes | None) -> None:
        while True:
            self._check()
            try:
                return self.queue.put(data, timeout=0.5)
            except queue.Full:
                continue

    def close(self) -> None:
        """Send what is queued and the end; raise if the folder stopped taking them."""
        self.put(None)
        self.thread.join()
        self._check()


async def read_for_shards(
    dsn: str, task: Task, upto: int, outs: list[Connection], stages: Stages, batch_size: int = 5000
) -> None:
    """Read and decode the events of ``task.channels`` up to ``upto`` once, and send each of
    ``len(outs)`` shards its part of every batch (:func:`projections.shards.divide`), in log
    order, then the end. The next batch is read while this one is decoded."""

    def fetch(after: int) -> asyncio.Task[list[StoredEvent]]:
        return asyncio.ensure_future(_read_batch(conn, task.channels, after, upto, batch_size))

    timed = stages.timed
    conn = await connect(dsn, server_settings={"application_name": _name("read")})
    senders = [_Sender(out) for out in outs]
    pending = fetch(0)
    try:
        while True:
            with timed("read"):
                events = await pending
            if not events:
                break
            pending = fetch(events[-1].position)
            with timed("decode"):
                decoded = []
                for i in range(0, len(events), DECODE_SLICE):
                    await asyncio.sleep(0)  # the next batch's rows come in meanwhile
                    decoded += [_slim(d) for d in fold.decode(events[i : i + DECODE_SLICE])]
            with timed("select"):
                parts = divide(decoded, len(outs))
            with timed("send"):
                for sender, part in zip(senders, parts, strict=True):
                    sender.put(_ENCODE((events[-1].position, part)))
        for sender in senders:
            sender.close()
    finally:
        pending.cancel()
        await conn.close()


#: where a fold process adds up the events it folded: (an array shared with the parent, without
#: a lock, and this process's own slot in it); the parent reads their sum
Progress = tuple[Any, int]

#: what a worker sends back per task: ("done", (events, seconds by stage, CPU by stage,
#: totals)) or ("failed", the exception, or a RuntimeError with its text when it cannot be
#: pickled)
Outcome = tuple[str, Any]


def _failed(exc: BaseException) -> Outcome:
    try:
        pickle.dumps(exc)
    except Exception:  # e.g. a driver error that will not pickle
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    return ("failed", exc)


def _worker(dsn: str, schema: str, upto: int, tasks: Any, results: Any, progress: Progress) -> None:
    """A worker process: fold tasks from ``tasks`` until the ``None`` at its end, or until one
    fails (the load is lost then; the parent stops the others)."""
    while (task := tasks.get()) is not None:
        if not _fold_one(dsn, schema, upto, task, results, progress):
            return


def _fold_one(
    dsn: str,
    schema: str,
    upto: int,
    task: Task,
    results: Any,
    progress: Progress,
    source: Connection | None = None,
) -> bool:
    """Fold ``task`` and put its outcome in ``results``; whether it was done."""
    try:
        stages, totals = asyncio.run(_task(dsn, schema, task, upto, progress, source))
    except BaseException as exc:  # sent to the parent, which raises it
        results.put(_failed(exc))
        return False
    results.put(("done", (stages.events, dict(stages.seconds), dict(stages.cpu), totals)))
    return True


def _reader(dsn: str, task: Task, upto: int, outs: list[Connection], results: Any) -> None:
    """A reader process: :func:`read_for_shards` for the folders at the other ends of ``outs``;
    its outcome counts no events (the folders count them) and adds no totals."""
    stages = Stages(cpu=True)
    try:
        asyncio.run(read_for_shards(dsn, task, upto, outs, stages))
    except BaseException as exc:
        results.put(_failed(exc))
        return
    results.put(("done", (0, dict(stages.seconds), dict(stages.cpu), Totals())))


def _check(processes: list[Any], results: Any) -> None:
    """Raise if a worker was killed (by a signal: kill -9, the OOM killer), or all are gone
    with outcomes missing: a process that fails reports it, one that is killed cannot."""
    for p in processes:
        if p.exitcode is not None and p.exitcode < 0:
            raise RuntimeError(
                f"rebuild: a fold process (pid {p.pid}) was killed by signal {-p.exitcode}"
            )
    if not any(p.is_alive() for p in processes) and results.empty():
        raise RuntimeError("rebuild: the fold's worker processes died")


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
    reader: bool | None = None,
) -> int:
    """Fold the log up to ``upto`` into ``schema`` (committed; indexes deferred by the caller).

    A big log is folded by several processes (:func:`tasks`: whole channels, a big one cut in
    shards by message key, or every group in ``shards`` when given), each task committed on
    its own connection. The tasks of whole channels go to ``workers`` processes that pull
    them; the shards of a fed group (``Task.fed``; ``reader`` as :func:`tasks` takes it) are
    fed by one reader process of their group (:func:`read_for_shards`: the group's events
    read and decoded once, not once per shard) and folded by a process each, all at once.
    This process only starts them, reports progress (``on_batch`` with about how many events
    are folded) and, once all are done, writes the count tables and channel activity from
    their merged totals. Shards of one channel thus never write the same row: their
    transactions, each a whole task long, would otherwise wait on each other's counter
    rows until commit.
    """
    n = min(workers or default_workers(), max(upto // max(min_events_per_shard, 1), 1))
    split_anyway = (shards is not None and shards > 1) or bool(reader)
    counts = await channel_counts(conn, upto) if n > 1 or split_anyway else {}
    plan = tasks(counts, n, shards, reader) if counts else []
    if len(plan) <= 1 and not (plan and plan[0].fed):
        async with conn.transaction():
            return await BulkFold(conn, schema, stages=stages, on_batch=on_batch).run(0, upto)
    groups: dict[tuple[str, ...], list[Task]] = {}
    for t in plan:
        groups.setdefault(tuple(t.channels), []).append(t)
    fed = [g for g in groups.values() if g[0].fed]
    pulled = [t for t in plan if not t.fed]
    context = multiprocessing.get_context("spawn")
    pool = min(n, len(pulled))
    folded = context.Array("q", pool + sum(len(g) for g in fed), lock=False)
    todo, results = context.Queue(), context.Queue()
    for t in pulled:
        todo.put(t)
    processes = [
        context.Process(
            target=_worker, args=(dsn, schema, upto, todo, results, (folded, i)), daemon=True
        )
        for i in range(pool)
    ]
    for _ in processes:
        todo.put(None)
    ends: list[Connection] = []  # this process's copies of the pipes' ends, closed once started
    slot = pool
    for group in fed:
        pipes = [context.Pipe(duplex=False) for _ in group]
        ends += [end for pipe in pipes for end in pipe]
        outs = [send for _, send in pipes]
        processes.append(
            context.Process(target=_reader, args=(dsn, group[0], upto, outs, results), daemon=True)
        )
        for t, (source, _) in zip(group, pipes, strict=True):
            processes.append(
                context.Process(
                    target=_fold_one,
                    args=(dsn, schema, upto, t, results, (folded, slot), source),
                    daemon=True,
                )
            )
            slot += 1
    expected = len(pulled) + sum(len(g) + 1 for g in fed)
    outcomes: list[Outcome] = []
    try:
        for p in processes:
            p.start()
        for end in ends:  # a reader or folder that dies then closes its pipe's last end
            end.close()
        while len(outcomes) < expected:
            try:
                outcomes.append(await asyncio.to_thread(results.get, True, 0.5))
            except queue.Empty:
                _check(processes, results)
            if on_batch is not None:
                on_batch(sum(folded))
            if outcomes and outcomes[-1][0] == "failed":
                raise outcomes[-1][1]
    finally:
        _kill(processes)  # all done: they are leaving anyway; else stop them
        for end in ends:
            end.close()
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
