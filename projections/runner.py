"""The projector: tails the log from its checkpoint and folds it into the read models.

One transaction per batch writes the models *and* advances the checkpoint (invariant 4).
Only the leader runs: it holds a session advisory lock on the very connection its batches
use, so if that connection dies the lock goes with it and a standby, blocked on the same
lock, takes over at once. Every batch transaction also takes the live write lock, which a
rebuild's swap takes too, so the two never interleave.

With ``shards`` > 1 (``ACKLOG_PROJECTOR_SHARDS``), ``shard`` k folds only its share of each
batch (``projections.shards.select``), with a checkpoint, a leader lock and standbys of its
own (``readmodel.checkpoints``, ``locks.projector_leader``). Its batches take the write lock
shared (with a per-shard lock exclusive), so the shards fold side by side; a rebuild's swap
and the sweep take it exclusive. Only shard 0 sweeps: the sweep marks messages of every
shard, and a shard that loaded a row before a sweep marked it would write it back unmarked
(and the next sweep would count it again), so it runs alone. Each batch also checks that
the number of shards recorded is still its own, and stops (``ShardsMismatch``) if not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

from eventstore import checkpoint, locks
from eventstore.leader import follow, lead_forever
from eventstore.read import head, read
from eventstore.subscribe import Wakeup
from projections import fold, shards
from projections.clock import Clock, utcnow
from projections.readmodel import LIVE, bulk, checkpoints, load, schema_name, write
from projections.readmodel import LIVE_CHECKPOINT as LIVE_CHECKPOINT
from projections.readmodel.checkpoints import ShardsMismatch
from projections.rules.rows import Batch
from projections.stages import Stages

log = logging.getLogger(__name__)


BatchHook = Callable[[Batch], None]
#: the bulk load a cold live projector runs instead of folding a long log batch by batch:
#: ``projections.rebuild.bulk_load``, given by whoever builds a live projector (rebuild builds
#: on this module, not the other way round); False when another rebuild holds its lock
BulkLoad = Callable[[str, Clock, Stages], Awaitable[bool]]


#: a live projector that starts from nothing (no checkpoint) with at least this many events
#: in the log loads them in bulk, as ``acklog rebuild`` does, instead of batch by batch
#: (the service sets it from ``ACKLOG_BULK_CATCHUP``; 0 never does)
BULK_CATCHUP = 100_000


class Projector:
    def __init__(
        self,
        dsn: str,
        *,
        schema: str = LIVE,
        name: str | None = None,
        shard: int = 0,
        shards: int = 1,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        clock: Clock = utcnow,
        on_batch: BatchHook | None = None,
        live: bool = True,
        before_commit: Callable[[Batch], Awaitable[None]] | None = None,
        linger: float = 0.2,
        sweep_interval: float | None = None,
        bulk_catchup: int = BULK_CATCHUP,
        bulk_load: BulkLoad | None = None,
    ) -> None:
        self.dsn = dsn
        self.schema = schema_name(schema)
        #: this projector folds shard ``shard`` of ``shards`` (``projections.shards``)
        self.shard = shard
        self.shards = shards
        self.name = checkpoints.name(shard, shards) if name is None else name
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.clock = clock
        self.on_batch = on_batch
        self.live = live
        self.before_commit = before_commit
        self.linger = linger
        self.sweep_interval = poll_interval if sweep_interval is None else sweep_interval
        self.bulk_catchup = bulk_catchup
        self.bulk_load = bulk_load
        self.position = 0
        self.is_leader = asyncio.Event()
        self._advanced = asyncio.Condition()
        self.stages = Stages()
        self._prepared: asyncpg.Connection | None = None

    async def step(self, conn: asyncpg.Connection, *, upto: int | None = None) -> int:
        """Fold one batch in one transaction; returns how many events it folded.

        Messages new to the table are written by binary COPY (:func:`write.write`), so the
        first step on a connection gives it binary jsonb (``bulk_codecs``: the same values in
        and out).
        """
        timed = self.stages.timed
        if conn is not self._prepared:
            await bulk.bulk_codecs(conn)
            self._prepared = conn
        async with conn.transaction():
            with timed("lock and checkpoint"):
                position = await self._lock_and_load(conn)
            with timed("read"):
                events = await read(
                    conn, after=position, limit=self.batch_size, upto=upto, for_fold=True
                )
            if not events:
                self.position = position
                return 0
            with timed("decode"):
                decoded = shards.select(fold.decode(events), self.shard, self.shards)
            with timed("load"):
                keys, receipt_keys = fold.message_keys(decoded)
                existing, missed = await load.load_messages(conn, self.schema, keys)
                receipts = await load.load_receipts(conn, self.schema, receipt_keys)
                deadlines = await load.load_deadlines(conn)
                runs = await load.load_runs(conn, self.schema, fold.instance_channels(decoded))
            with timed("fold"):
                batch = fold.fold(decoded, existing, missed, receipts, deadlines, runs)
            with timed("write"):
                await write.write(conn, self.schema, batch, copy=True)
            with timed("lock and checkpoint"):
                await checkpoint.advance(conn, self.name, position, events[-1].position)
            if self.before_commit is not None:
                await self.before_commit(batch)
            commit_started = time.perf_counter()
            commit_cpu = time.process_time() if self.stages.with_cpu else 0.0
        self.stages.add(
            "commit",
            time.perf_counter() - commit_started,
            time.process_time() - commit_cpu if self.stages.with_cpu else 0.0,
        )
        self.stages.events += len(events)
        self.stages.batches += 1
        self.position = events[-1].position
        if self.on_batch is not None:
            self.on_batch(batch)
        async with self._advanced:
            self._advanced.notify_all()
        return len(events)

    async def _lock_and_load(self, conn: asyncpg.Connection) -> int:
        """The live write lock (exclusive with one shard; shared, plus this shard's own,
        with several) and this projector's checkpoint; a live projector also checks that the
        number of shards recorded is still its own."""
        if not self.live:
            return await checkpoint.load(conn, self.name)
        if self.shards == 1:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.READ_MODEL_WRITE)
        else:
            await conn.execute(
                "SELECT pg_advisory_xact_lock_shared($1), pg_advisory_xact_lock($2)",
                locks.READ_MODEL_WRITE,
                locks.shard_write(self.shard, self.shards),
            )
        position, recorded = await checkpoint.load_guarded(conn, self.name)
        if recorded != self.shards:
            raise ShardsMismatch(checkpoints.mismatch(self.shards, recorded))
        return position

    async def wait_for(self, position: int) -> None:
        """Return once this projector has folded the log up to ``position``."""
        async with self._advanced:
            await self._advanced.wait_for(lambda: self.position >= position)

    async def sweep(self, conn: asyncpg.Connection) -> int:
        """Mark messages whose ack deadline passed (live write lock held exclusive); only
        shard 0 sweeps (see the module's docstring)."""
        if self.shard != 0:
            return 0
        async with conn.transaction():
            if self.live:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.READ_MODEL_WRITE)
            return await write.sweep(conn, self.schema, self.clock())

    async def cold_start(self, conn: asyncpg.Connection) -> int:
        """A live projector with no checkpoint and a long log: the bulk load of a rebuild.

        Folding from nothing, batch by batch, upserts every message as it goes; the log
        folded aside in bulk (``bulk_load``: :func:`projections.rebuild.rebuild`, fresh tables,
        COPY, indexes built after, several processes) and swapped in gives the same tables
        (``acklog verify`` compares them) about twice as fast (bench, 1M events on 2 cores:
        21,884 against 11,000 events/s). Readers see the empty models until the swap, then
        all of them at once. Returns the position it loaded up to (0 when this projector
        has no ``bulk_load``, has a checkpoint already, is not live, the log is shorter than
        ``bulk_catchup``, or a rebuild is running: then it folds batch by batch).
        """
        if not self.live or self.bulk_catchup <= 0 or self.bulk_load is None:
            return 0
        if await checkpoint.load(conn, self.name) != 0:
            return 0
        end = await head(conn)
        if end < self.bulk_catchup:
            return 0
        log.info("projector: no checkpoint and %d events in the log: bulk load", end)
        started = time.perf_counter()
        if not await self.bulk_load(self.dsn, self.clock, self.stages):
            if self.shards == 1:
                log.info("projector: a rebuild is running; folding batch by batch")
                return 0
            # another shard's cold start, most likely: its swap sets this shard's checkpoint
            # too, so wait for it instead of folding the same log beside it batch by batch
            log.info("projector shard %d: a rebuild is running; waiting for it", self.shard)
            await conn.execute("SELECT pg_advisory_lock($1)", locks.REBUILD)
            await conn.execute("SELECT pg_advisory_unlock($1)", locks.REBUILD)
        self.position = await checkpoint.load(conn, self.name)
        log.info(
            "projector: bulk load to position %d in %.1f s",
            self.position,
            time.perf_counter() - started,
        )
        async with self._advanced:
            self._advanced.notify_all()
        return self.position

    async def catch_up(self, conn: asyncpg.Connection, *, upto: int | None = None) -> int:
        total = 0
        while n := await self.step(conn, upto=upto):
            total += n
        return total

    async def _lead(self, conn: asyncpg.Connection, wake: Wakeup) -> None:
        """Fold as the leader: batches by count when behind, by time when keeping up.

        After a partial batch the projector lingers ``linger`` seconds, so that the next one
        gathers what arrives meanwhile: under a steady stream of small appends it folds a
        few bigger batches instead of many tiny ones, each with its transaction, locks,
        checkpoint and deadlines (it adds at most ``linger`` to the projection lag). Each
        batch costs about a millisecond of CPU whatever its size (some ten statements), and a
        projector that slept starts its next batch with cold caches, so the default of 0.2 s
        (batches of about 600 events at 3,000/s, instead of about 170 at 50 ms) matters more
        than the lag it adds. The sweep runs at most every ``sweep_interval`` seconds, not on
        every wake-up.
        """
        if self.live:
            await checkpoints.claim(conn, self.shards)
        await self.cold_start(conn)
        await follow(
            conn,
            wake,
            self.step,
            self.sweep,
            batch_size=self.batch_size,
            linger=self.linger,
            sweep_interval=self.sweep_interval,
            poll_interval=self.poll_interval,
        )

    async def run(self) -> None:
        """Lead or stand by, forever; survives lost connections and database restarts."""
        async with Wakeup(self.dsn, poll_interval=self.poll_interval) as wake:
            await lead_forever(
                self.dsn,
                locks.projector_leader(self.shard, self.shards),
                "projector" if self.shards == 1 else f"projector-{self.shard}/{self.shards}",
                lambda conn: self._lead(conn, wake),
                self.is_leader,
                fatal=(ShardsMismatch,),
            )
