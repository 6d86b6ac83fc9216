"""Group commit: one writer task turns concurrent appends into one transaction per batch.

Each caller waits on a future resolved only after its batch has committed, so an HTTP 2xx can
follow; when the batch fails, every caller in it gets the exception (and answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg

from eventstore.events import Appended, NewEvent

_APPEND = "SELECT event_position, event_duplicate_of FROM append_events($1, $2, $3, $4, $5, $6, $7)"


class AppenderClosed(RuntimeError):
    """The appender is shutting down and takes no more events."""


class Appender:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_batch: int = 512,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[NewEvent, asyncio.Future[Appended]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._on_batch = on_batch
        self._closed = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="acklog-appender")

    async def stop(self) -> None:
        """Finish what is queued, then stop (the writer drains before it exits)."""
        self._closed = True
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def append(self, event: NewEvent) -> Appended:
        if self._closed:
            raise AppenderClosed("acklog is shutting down")
        fut: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((event, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[tuple[NewEvent, asyncio.Future[Appended]]]) -> None:
        live = [(ev, fut) for ev, fut in batch if not fut.done()]
        if not live:
            return
        try:
            async with self._pool.acquire() as conn:
                results = await write_batch(conn, [ev for ev, _ in live])
        except asyncio.CancelledError:
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(AppenderClosed("acklog is shutting down"))
            raise
        except Exception as exc:  # every waiter learns the batch did not commit
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(live))
        for (_, fut), result in zip(live, results, strict=True):
            if not fut.done():
                fut.set_result(result)


async def write_batch(conn: asyncpg.Connection, events: list[NewEvent]) -> list[Appended]:
    """Append ``events`` in one transaction (autocommit of a single statement)."""
    rows = await conn.fetch(
        _APPEND,
        [e.received_at for e in events],
        [e.channel for e in events],
        [e.provider for e in events],
        [e.content_type for e in events],
        [e.headers for e in events],
        [e.body for e in events],
        [e.dedup_key for e in events],
    )
    return [Appended(r["event_position"], r["event_duplicate_of"]) for r in rows]
