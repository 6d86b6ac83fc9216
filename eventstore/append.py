"""Group commit: writer tasks turn concurrent appends into one transaction per batch.

Each caller waits on a future resolved only after its batch has committed, so an HTTP 2xx can
follow. With ``writers=2`` two batches are in flight: while one commits, the next forms and waits
on the append lock (taken inside ``append_events`` before any position is drawn), so
positions still follow commit order (invariant 3) and the second batch's dedup lookup runs
with a snapshot that sees the first batch's rows.

Failures are typed (``eventstore.errors``): when the database does not take a batch, every
caller in it gets ``StoreUnavailable``; when the batch is refused for its *data*
(``EventRejected``), it is split in halves and retried, so only the event that cannot be
written fails and its neighbours commit (invariant 12).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import asyncpg

from eventstore.errors import EventRejected, StoreUnavailable, store_boundary
from eventstore.events import Appended, NewEvent
from eventstore.pool import encode_json

_APPEND = "SELECT event_position, event_duplicate_of FROM append_events($1)"

Waiter = tuple[NewEvent, "asyncio.Future[Appended]", float]


class AppenderClosed(StoreUnavailable):
    """The appender is shutting down and takes no more events (a retry elsewhere succeeds)."""


class Appender:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = 512,
        writers: int = 1,
        timeout: float = 10.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._writers = writers
        self._timeout = timeout
        self._on_batch = on_batch
        self._pending: list[Waiter] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._busy = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._conns: list[asyncpg.Connection | None] = []
        self._closed = False

    async def start(self) -> None:
        self._idle.set()
        self._tasks = [
            asyncio.create_task(self._run(), name=f"acklog-appender-{i}")
            for i in range(self._writers)
        ]

    async def stop(self) -> None:
        """Finish what is queued, then stop (the writers drain before they exit)."""
        self._closed = True
        while self._pending or self._busy:
            self._idle.clear()
            self._wakeup.set()
            await self._idle.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def append(self, event: NewEvent) -> Appended:
        """Resolve once ``event`` is committed; raises ``StoreUnavailable`` (the database did
        not take it, or the wait passed the timeout) or ``EventRejected`` (it never will)."""
        if self._closed:
            raise AppenderClosed("acklog is shutting down")
        fut: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self._pending.append((event, fut, time.monotonic() + self._timeout))
        self._wakeup.set()
        return await fut

    async def _run(self) -> None:
        # each writer keeps its connection: a pool round trip per batch would add the pool's
        # reset query (a second round trip) to every commit
        self._conns.append(None)
        slot = len(self._conns) - 1
        try:
            while True:
                await self._wakeup.wait()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                if not self._pending:
                    self._wakeup.clear()
                if not batch:
                    continue
                self._busy += 1
                try:
                    await self._commit(batch, slot)
                finally:
                    self._busy -= 1
                    if not self._busy and not self._pending:
                        self._idle.set()
        finally:
            conn, self._conns[slot] = self._conns[slot], None
            if conn is not None:
                await self._pool.release(conn)

    async def _commit(self, batch: list[Waiter], slot: int) -> None:
        now = time.monotonic()
        live = []
        for waiter in batch:
            if waiter[1].done():
                continue
            if waiter[2] <= now:  # waited its whole commit timeout in the queue
                waiter[1].set_exception(StoreUnavailable("timed out waiting for a commit"))
                continue
            live.append(waiter)
        if not live:
            return
        try:
            await self._write(live, min(w[2] for w in live) - now, slot)
        except asyncio.CancelledError:
            _fail(live, AppenderClosed("acklog is shutting down"))
            raise
        except Exception as exc:  # a bug: every waiter learns its batch did not commit
            _fail(live, exc)
            await self._drop(slot)  # and the connection it left in an unknown state goes

    async def _write(self, live: list[Waiter], timeout: float, slot: int) -> None:
        try:
            with store_boundary():
                async with asyncio.timeout(timeout):
                    conn = self._conns[slot]
                    if conn is not None and _closed(conn):  # the server closed it while held
                        await self._drop(slot)
                        conn = None
                    if conn is None:
                        conn = self._conns[slot] = await self._pool.acquire()
                    results = await write_batch(conn, [w[0] for w in live])
        except EventRejected as exc:
            if len(live) == 1:
                _fail(live, exc)
                return
            # only the event at fault may fail: halve until it stands alone
            half = len(live) // 2
            await self._write(live[:half], timeout, slot)
            await self._write(live[half:], timeout, slot)
            return
        except StoreUnavailable as exc:
            _fail(live, exc)
            await self._drop(slot)
            return
        if self._on_batch is not None:
            self._on_batch(len(live))
        for waiter, result in zip(live, results, strict=True):
            if not waiter[1].done():
                waiter[1].set_result(result)

    async def _drop(self, slot: int) -> None:
        """Give a connection that failed back to the pool, closed (the next batch takes a
        fresh one: the pool reconnects once the database is back).

        Given back even when the server closed it already: after a protocol abort (e.g.
        "cannot switch to state 12" mid-outage) asyncpg frees the pool's slot only when the
        connection is terminated or released, and a slot never freed makes ``Pool.close()``
        wait for ever, so the process never exits after a SIGTERM."""
        conn, self._conns[slot] = self._conns[slot], None
        if conn is None:
            return
        with contextlib.suppress(asyncpg.InterfaceError):  # asyncpg released it already
            conn.terminate()  # frees the pool's slot, aborted or not
        with contextlib.suppress(asyncpg.InterfaceError):  # the pool is closing
            await self._pool.release(conn)  # a no-op once terminate freed the slot


def _closed(conn: asyncpg.Connection) -> bool:
    """A held pool connection whose server connection is gone (or that asyncpg released)."""
    try:
        closed: bool = conn.is_closed()
    except asyncpg.InterfaceError:  # a released pool connection refuses every call
        return True
    return closed


def _fail(waiters: list[Waiter], exc: BaseException) -> None:
    for _, fut, _ in waiters:
        if not fut.done():
            fut.set_exception(exc)


async def write_batch(conn: asyncpg.Connection, events: list[NewEvent]) -> list[Appended]:
    """Append ``events`` in one transaction (autocommit of a single statement): one array of
    ``event_row`` (sql/011), so asyncpg checks one element per event, not seven."""
    rows = await conn.fetch(
        _APPEND,
        [
            (
                e.received_at,
                e.channel,
                e.provider,
                e.content_type,
                encode_json(e.headers),
                e.body,
                e.dedup_key,
            )
            for e in events
        ],
    )
    return [Appended(r[0], r[1]) for r in rows]
