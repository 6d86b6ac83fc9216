"""``acklog tail``: every event as it arrives, with what its decoder makes of it.

It reads the log itself, not the read models: a line shows up as soon as the webhook is
committed, whether or not a projector runs, and an event that would be quarantined is shown
with its reason at once. Decoding here is the same pure function the projector uses, so what
tail prints is what the projector will fold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import signal
import sys
from collections.abc import AsyncIterator
from typing import assert_never

import asyncpg
import msgspec

from eventstore.errors import DRIVER_ERRORS
from eventstore.events import StoredEvent
from eventstore.pool import connect
from eventstore.read import head, read
from eventstore.subscribe import Wakeup
from projections.facts import (
    Fact,
    Ignored,
    InstanceStatusReported,
    MessageDeleted,
    MessageObserved,
    StatusReported,
)
from projections.fold import decode_event
from service.config import from_env
from service.database import database_url, wait_and_migrate

log = logging.getLogger(__name__)


class TailLine(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    received_at: dt.datetime
    channel: str
    provider: str
    duplicate_of: int | None
    decoded: str

    def render(self) -> str:
        dup = f"dup of #{self.duplicate_of}" if self.duplicate_of else "-"
        at = self.received_at.astimezone(dt.UTC).isoformat(timespec="milliseconds")
        return f"#{self.position} {at} {self.channel} {self.provider} {dup} {self.decoded}"


def describe_fact(fact: Fact) -> str:
    match fact:
        case MessageObserved():
            direction = "in" if fact.direction == "incoming" else "out"
            derived = " (derived key)" if fact.derived_key else ""
            return f"message {direction} {fact.key}{derived}"
        case StatusReported():
            text = f"status {fact.key} → {fact.status}"
            if fact.participant:
                text += f" [{fact.participant}]"
            error = ": ".join(p for p in (fact.error_code, fact.error_text) if p)
            return text + (f" ({error})" if error else "")
        case MessageDeleted():
            return f"deleted {fact.key}"
        case InstanceStatusReported():
            return f"instance → {fact.status}" + (f" ({fact.reason})" if fact.reason else "")
        case Ignored():
            return f"ignored: {fact.reason}"
        case _:
            assert_never(fact)


def describe(event: StoredEvent) -> TailLine:
    d = decode_event(event)
    if d.error is not None:
        decoded = f"QUARANTINE: {d.error}"
    else:
        decoded = "; ".join(describe_fact(f) for f in d.facts) or "no facts"
    return TailLine(
        position=event.position,
        received_at=event.received_at,
        channel=event.channel,
        provider=event.provider,
        duplicate_of=event.duplicate_of,
        decoded=decoded,
    )


async def _until(stop: asyncio.Event, wakeup: Wakeup) -> None:
    """Return on a notification, a poll interval, or ``stop``, whichever comes first."""
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wakeup.wait())}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


async def tail(
    dsn: str,
    *,
    stop: asyncio.Event,
    channel: str | None = None,
    after: int | None = None,
    started: asyncio.Event | None = None,
    poll_interval: float = 1.0,
    batch: int = 500,
) -> AsyncIterator[TailLine]:
    """Yield a line per event after ``after`` (default: the head when called) until ``stop``.

    ``started`` is set once the starting position is fixed: anything committed after that is
    yielded. A lost database connection is retried; no event is skipped (reads resume from
    the last position yielded).
    """
    conn: asyncpg.Connection | None = None
    async with Wakeup(dsn, poll_interval=poll_interval) as wakeup:
        try:
            while not stop.is_set():
                try:
                    if conn is None:
                        conn = await connect(dsn)
                    if after is None:
                        after = await head(conn)
                    if started is not None:
                        started.set()
                    events = await read(conn, after=after, limit=batch, channel=channel)
                except DRIVER_ERRORS as exc:
                    log.warning("tail: database connection lost (%s); retrying", exc)
                    if conn is not None:
                        conn.terminate()
                    conn = None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), poll_interval)
                    continue
                for event in events:
                    yield describe(event)
                    after = event.position
                if len(events) < batch:
                    await _until(stop, wakeup)
        finally:
            if conn is not None:
                await conn.close()


def run(args: argparse.Namespace) -> int:
    """Print lines until Ctrl-C (or SIGTERM); both end the command with status 0."""
    settings = from_env()
    dsn = database_url(settings)

    async def main() -> None:
        await wait_and_migrate(dsn)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        where = f"channel {args.channel}" if args.channel else "all channels"
        print(f"tailing {where} from the current head (Ctrl-C to stop)", file=sys.stderr)
        async for line in tail(dsn, stop=stop, channel=args.channel):
            print(line.render(), flush=True)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channel", help="only this channel's events")
