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

import asyncpg
import msgspec

from eventstore import channels
from eventstore.errors import DRIVER_ERRORS
from eventstore.events import StoredEvent
from eventstore.pool import connect
from eventstore.read import first_at_or_after, head, read
from eventstore.subscribe import Wakeup
from projections.facts import describe_fact
from projections.fold import decode_event
from service.core.config import from_env
from service.core.database import database_url, wait_and_migrate

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
    """Print lines until Ctrl-C (or SIGTERM); both end the command with status 0. A channel
    that does not exist is an error (status 2), not a silent tail."""
    settings = from_env()
    dsn = database_url(settings)

    async def main() -> int:
        await wait_and_migrate(dsn)
        if args.channel is not None and not await _registered(dsn, args.channel):
            print(f"error: no channel named {args.channel!r}", file=sys.stderr)
            return 2
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        where = f"channel {args.channel}" if args.channel else "all channels"
        after, start = await _start(dsn, args)
        print(f"tailing {where} {start} (Ctrl-C to stop)", file=sys.stderr)
        async for line in tail(dsn, stop=stop, channel=args.channel, after=after):
            print(line.render(), flush=True)
        return 0

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 0


async def _registered(dsn: str, channel: str) -> bool:
    """A channel of that name exists (else tailing it would print nothing, forever)."""
    conn = await connect(dsn)
    try:
        return await channels.provider(conn, channel) is not None
    finally:
        await conn.close()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """``15m``, ``2h``, ``1d``, ``30s`` ago, or an ISO 8601 time (UTC when it has no zone)."""
    text = text.strip()
    if text[-1:] in _UNITS and text[:-1].replace(".", "", 1).isdigit():
        return now - dt.timedelta(seconds=float(text[:-1]) * _UNITS[text[-1]])
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since takes 15m, 2h, 1d, 30s or an ISO time like 2026-03-01T12:00, not {text!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _since(text: str) -> str:
    parse_since(text, dt.datetime.now(dt.UTC))  # a usage error now, not a traceback later
    return text


async def _start(dsn: str, args: argparse.Namespace) -> tuple[int | None, str]:
    """Where to start: (position to read after, what to tell the user)."""
    if args.from_position is not None:
        return max(args.from_position - 1, 0), f"from position {args.from_position}"
    if args.since is None:
        return None, "from the current head"
    when = parse_since(args.since, dt.datetime.now(dt.UTC))
    conn = await connect(dsn)
    try:
        first = await first_at_or_after(conn, when)
    finally:
        await conn.close()
    return first - 1, f"from {when.isoformat(timespec='seconds')} (position {first})"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channel", help="only this channel's events")
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--from-position", type=int, metavar="N", help="start at log position N (then follow)"
    )
    start.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="start at events received since WHEN: 15m, 2h, 1d or ISO",
    )
