"""Lead on a session advisory lock, forever: the loop every single-leader process runs.

Connect, take the lock (standbys block here), run ``lead`` on that connection while it
holds the lock; when the connection or ``lead`` fails, let the lock go with the connection,
wait a moment and start again. Lost databases are logged as a warning, other errors with
their traceback; cancellation (shutdown) ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable

import asyncpg

from eventstore.errors import DRIVER_ERRORS
from eventstore.pool import connect
from eventstore.subscribe import Wakeup

log = logging.getLogger(__name__)


async def lead_forever(
    dsn: str,
    key: int,
    what: str,
    lead: Callable[[asyncpg.Connection], Awaitable[None]],
    is_leader: asyncio.Event,
    *,
    retry_delay: float = 0.5,
    fatal: tuple[type[Exception], ...] = (),
) -> None:
    """``what`` names the leader in logs and in ``application_name`` (``acklog-<what>-<pid>``).

    A lost database is logged once per outage: the attempts to reconnect that fail after it
    log at DEBUG, until the leader connects again. ``fatal``: errors that no retry mends
    (the caller's settings are wrong): raised, after the lock is let go."""
    lost = False
    while True:
        conn: asyncpg.Connection | None = None
        try:
            conn = await connect(
                dsn, server_settings={"application_name": f"acklog-{what}-{os.getpid()}"}
            )
            lost = False
            await conn.execute("SELECT pg_advisory_lock($1)", key)
            is_leader.set()
            log.info("%s is the leader", what)
            await lead(conn)
        except asyncio.CancelledError:
            raise
        except fatal:
            raise
        except DRIVER_ERRORS as exc:
            log.log(
                logging.DEBUG if lost else logging.WARNING,
                "%s lost the database (%s); retrying every %gs",
                what,
                exc,
                retry_delay,
            )
            lost = True
        except Exception:
            log.exception("%s failed; retrying", what)
        finally:
            is_leader.clear()
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.terminate()
        await asyncio.sleep(retry_delay)


async def follow(
    conn: asyncpg.Connection,
    wake: Wakeup,
    step: Callable[[asyncpg.Connection], Awaitable[int]],
    sweep: Callable[[asyncpg.Connection], Awaitable[object]],
    *,
    batch_size: int,
    linger: float,
    sweep_interval: float,
    poll_interval: float,
) -> None:
    """A leader's loop over the log: ``step`` (returns how many events it read) until it
    reads less than a batch, ``sweep`` at most every ``sweep_interval`` seconds, then
    ``linger`` seconds after a partial batch (so the next one gathers what arrives meanwhile)
    or, when nothing came, wait for a wake-up or ``poll_interval``."""
    loop = asyncio.get_running_loop()
    next_sweep = 0.0
    while True:
        n = await step(conn)
        if n == batch_size:
            continue
        if loop.time() >= next_sweep:
            await sweep(conn)
            next_sweep = loop.time() + sweep_interval
        if n:
            await asyncio.sleep(linger)
            continue
        await wake.wait(min(poll_interval, max(next_sweep - loop.time(), 0.01)))
