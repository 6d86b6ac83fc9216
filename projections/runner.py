"""The projector: tails the log from its checkpoint and folds it into the read models.

One transaction per batch writes the models *and* advances the checkpoint (invariant 4).
Only the leader runs: it holds a session advisory lock on the very connection its batches
use, so if that connection dies the lock goes with it and a standby, blocked on the same
lock, takes over at once. Every batch transaction also takes the live write lock, which a
rebuild's swap takes too, so the two never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
from collections.abc import Awaitable, Callable

import asyncpg

from eventstore import checkpoint, locks
from eventstore.errors import DRIVER_ERRORS
from eventstore.pool import connect
from eventstore.read import read
from eventstore.subscribe import Wakeup
from projections import fold
from projections.readmodel import LIVE, load, schema_name, write
from projections.readmodel import LIVE_CHECKPOINT as LIVE_CHECKPOINT

log = logging.getLogger(__name__)


Clock = Callable[[], dt.datetime]
BatchHook = Callable[[fold.Batch], None]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Projector:
    def __init__(
        self,
        dsn: str,
        *,
        schema: str = LIVE,
        name: str = LIVE_CHECKPOINT,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        clock: Clock = utcnow,
        on_batch: BatchHook | None = None,
        live: bool = True,
        before_commit: Callable[[fold.Batch], Awaitable[None]] | None = None,
    ) -> None:
        self.dsn = dsn
        self.schema = schema_name(schema)
        self.name = name
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.clock = clock
        self.on_batch = on_batch
        self.live = live
        self.before_commit = before_commit
        self.position = 0
        self.is_leader = asyncio.Event()
        self._advanced = asyncio.Condition()

    async def step(self, conn: asyncpg.Connection, *, upto: int | None = None) -> int:
        """Fold one batch in one transaction; returns how many events it folded."""
        async with conn.transaction():
            if self.live:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.READ_MODEL_WRITE)
            position = await checkpoint.load(conn, self.name)
            events = await read(conn, after=position, limit=self.batch_size, upto=upto)
            if not events:
                self.position = position
                return 0
            decoded = fold.decode(events)
            keys, receipt_keys = fold.message_keys(decoded)
            existing, missed = await load.load_messages(conn, self.schema, keys)
            receipts = await load.load_receipts(conn, self.schema, receipt_keys)
            deadlines = await load.load_deadlines(conn)
            batch = fold.fold(decoded, existing, missed, receipts, deadlines)
            await write.write(conn, self.schema, batch)
            await checkpoint.advance(conn, self.name, position, events[-1].position)
            if self.before_commit is not None:
                await self.before_commit(batch)
        self.position = events[-1].position
        if self.on_batch is not None:
            self.on_batch(batch)
        async with self._advanced:
            self._advanced.notify_all()
        return len(events)

    async def wait_for(self, position: int) -> None:
        """Return once this projector has folded the log up to ``position``."""
        async with self._advanced:
            await self._advanced.wait_for(lambda: self.position >= position)

    async def sweep(self, conn: asyncpg.Connection) -> int:
        """Mark messages whose ack deadline passed (live write lock held)."""
        async with conn.transaction():
            if self.live:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.READ_MODEL_WRITE)
            return await write.sweep(conn, self.schema, self.clock())

    async def catch_up(self, conn: asyncpg.Connection, *, upto: int | None = None) -> int:
        total = 0
        while n := await self.step(conn, upto=upto):
            total += n
        return total

    async def run(self) -> None:
        """Lead or stand by, forever; survives lost connections and database restarts."""
        async with Wakeup(self.dsn, poll_interval=self.poll_interval) as wake:
            while True:
                conn: asyncpg.Connection | None = None
                try:
                    conn = await connect(
                        self.dsn,
                        server_settings={"application_name": f"acklog-projector-{os.getpid()}"},
                    )
                    await conn.execute("SELECT pg_advisory_lock($1)", locks.PROJECTOR_LEADER)
                    self.is_leader.set()
                    log.info("projector %s is the leader", self.name)
                    while True:
                        if await self.step(conn) == self.batch_size:
                            continue
                        await self.sweep(conn)
                        if await self.step(conn):
                            continue
                        await wake.wait()
                except asyncio.CancelledError:
                    raise
                except DRIVER_ERRORS as exc:
                    log.warning("projector lost the database (%s); retrying", exc)
                except Exception:
                    log.exception("projector failed; retrying")
                finally:
                    self.is_leader.clear()
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.terminate()
                await asyncio.sleep(0.5)
