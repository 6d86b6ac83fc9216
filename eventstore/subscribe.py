"""Wake-ups for log readers: LISTEN/NOTIFY when it works, polling always (invariant 8).

A notification carries no data a reader relies on: it only cuts a poll interval short. The
reader re-reads from its checkpoint every time, so a lost LISTEN connection costs latency,
never events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from eventstore.errors import DRIVER_ERRORS
from eventstore.pool import open_connection

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "acklog_events"


class Wakeup:
    def __init__(self, dsn: str, channel: str = EVENTS_CHANNEL, poll_interval: float = 1.0) -> None:
        self._dsn = dsn
        self._channel = channel
        self.poll_interval = poll_interval
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def __aenter__(self) -> Wakeup:
        self._task = asyncio.create_task(self._run(), name=f"listen-{self._channel}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait(self, timeout: float | None = None) -> bool:
        """Return True when woken by a notification, False when the poll interval elapsed."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout or self.poll_interval)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    async def _run(self) -> None:
        while True:
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                async for attempt in AsyncRetrying(
                    wait=wait_exponential(multiplier=0.1, max=5),
                    retry=retry_if_exception_type(DRIVER_ERRORS),
                ):
                    with attempt:
                        conn = await open_connection(self._dsn)

                def on_notify(*_: Any) -> None:
                    self._event.set()

                def on_lost(*_: Any, lost: asyncio.Event = lost) -> None:
                    lost.set()

                assert conn is not None
                conn.add_termination_listener(on_lost)
                await conn.add_listener(self._channel, on_notify)
                self.connected.set()
                self._event.set()  # anything committed while we were away: go and read
                while not lost.is_set() and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 5.0)
                    if not lost.is_set():
                        try:
                            await conn.execute("SELECT 1")
                        except DRIVER_ERRORS:
                            lost.set()
                log.warning("LISTEN connection lost; reconnecting")
            except DRIVER_ERRORS as exc:
                log.warning("LISTEN connection failed: %s", exc)
            finally:
                self.connected.clear()
                if conn is not None:
                    conn.terminate()  # also after an abort, whose cleanup never ran
            await asyncio.sleep(0.2)
