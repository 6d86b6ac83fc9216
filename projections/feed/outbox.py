"""The outbox projector: reads the log after its checkpoint and writes the canonical feed.

Like the read-model projector (``projections.runner``), one transaction per batch writes the
feed's events and rows *and* advances its checkpoint (``feed``), so a crash never loses or
invents an event, and a replay yields the same ids. One leader runs: it holds
``locks.FEED_OUTBOX`` on the connection its batches use; standbys block on it. It never takes
the read model's locks: a slow feed never slows the main projector, nor the other way round.

The sweep reports ``message.ack_missed`` for messages still waiting past a deadline (our
clock, invariant 7); a late ack reports it from the fold.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from eventstore import checkpoint, locks
from eventstore.leader import follow, lead_forever
from eventstore.read import read
from eventstore.replication import failover_risk
from eventstore.subscribe import Wakeup
from projections import fold
from projections.clock import Clock, utcnow
from projections.feed import derive, store
from projections.feed import events as fe
from projections.readmodel.load import load_deadlines
from projections.rules.deadlines import WAITS

log = logging.getLogger(__name__)

#: the outbox projector's checkpoint
FEED_CHECKPOINT = "feed"


class Outbox:
    def __init__(
        self,
        dsn: str,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        sweep_interval: float = 1.0,
        linger: float = 0.2,
        clock: Clock = utcnow,
        on_batch: Callable[[list[fe.FeedEvent]], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.sweep_interval = sweep_interval
        self.linger = linger
        self.clock = clock
        self.on_batch = on_batch
        self.position = 0
        self.is_leader = asyncio.Event()
        self._advanced = asyncio.Condition()

    async def step(self, conn: asyncpg.Connection, *, upto: int | None = None) -> int:
        """Derive one batch's events in one transaction; returns how many log events it read."""
        async with conn.transaction():
            # an erasure scrubs the feed with this lock exclusive (projections.erasure)
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", locks.ERASURE)
            position = await checkpoint.load(conn, FEED_CHECKPOINT)
            events = await read(conn, after=position, limit=self.batch_size, upto=upto)
            if not events:
                self.position = position
                return 0
            decoded = fold.decode(events)
            keys, _ = fold.message_keys(decoded)
            messages, missed = await store.load_messages(conn, keys)
            instances = await store.load_instances(conn, (e.channel for e in events))
            deadlines = await load_deadlines(conn)
            out = derive.derive(decoded, messages, missed, instances, deadlines)
            await store.write(conn, out.events, out.messages, out.missed, out.instances)
            await checkpoint.advance(conn, FEED_CHECKPOINT, position, events[-1].position)
        self.position = events[-1].position
        if self.on_batch is not None:
            self.on_batch(out.events)
        async with self._advanced:
            self._advanced.notify_all()
        return len(events)

    async def sweep(self, conn: asyncpg.Connection, limit: int = 1000) -> int:
        """Report the messages whose deadline passed while they still wait; returns how many."""
        now = self.clock()
        found: list[fe.FeedEvent] = []
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", locks.ERASURE)
            for stage in WAITS:
                overdue = await store.overdue(conn, stage, now, limit)
                if not overdue:
                    continue
                found += [derive.ack_missed(m, stage, due, now, late=False) for m, due in overdue]
                await store.mark_missed(conn, stage, [(m.channel, m.key) for m, _ in overdue])
            if found:
                await store.write(conn, found, {}, {}, {})
        if found and self.on_batch is not None:
            self.on_batch(found)
        return len(found)

    async def catch_up(self, conn: asyncpg.Connection, *, upto: int | None = None) -> int:
        total = 0
        while n := await self.step(conn, upto=upto):
            total += n
        return total

    async def wait_for(self, position: int) -> None:
        async with self._advanced:
            await self._advanced.wait_for(lambda: self.position >= position)

    async def _lead(self, conn: asyncpg.Connection, wake: Wakeup) -> None:
        """Derive until the connection is lost, sparing ingest on a shared machine:

        - commits do not wait for their WAL flush (``synchronous_commit = off``): a batch lost
          in a PostgreSQL crash is lost together with its checkpoint move, so it is derived
          again with the same event ids (at least once holds; nothing is invented), and the
          webhooks' own commits do not queue behind the feed's flushes;
        - when it starts leading it warns if standbys replicate asynchronously: a failover to
          one could then lose webhooks whose events the feed has already delivered;
        - after a partial batch it lingers ``linger`` seconds (as the projector does), so a
          steady trickle costs a few transactions a second, not one per wake-up.
        """
        risk = await failover_risk(conn)  # before the SET: it reads this session's value
        if risk:
            log.warning("feed: %s", risk)
        await conn.execute("SET synchronous_commit = off")
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
                locks.FEED_OUTBOX,
                "feed-outbox",
                lambda conn: self._lead(conn, wake),
                self.is_leader,
            )


async def rewind(conn: asyncpg.Connection) -> None:
    """Rebuild the feed from the log: forget its state and its checkpoint (leader lock held
    by the caller's session, so no outbox runs meanwhile). Events already in the feed keep
    their seq; re-derived ones with the same id are not written twice."""
    async with conn.transaction():
        await store.reset(conn)
        await checkpoint.drop(conn, FEED_CHECKPOINT)
