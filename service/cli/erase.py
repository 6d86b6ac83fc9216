"""``acklog erase --phone NUMBER``: erase one person's number from everything acklog keeps
(docs/erasure.md). Exit 0 when something was erased, 1 when the number was found nowhere
(as grep does), 2 when what was typed is not a phone number, 4 when the database was erased
but the archive store (``ACKLOG_ARCHIVE_URL``) failed: the archives were NOT rewritten, run
the same command again."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

import msgspec

from projections import erasure
from service.cli.common import settings_of
from service.core.database import database_url, wait_and_migrate


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    e = sub.add_parser(
        "erase",
        help="erase one person's phone number everywhere (GDPR art. 17)",
        description="Make a phone number unreadable everywhere acklog keeps it: the raw"
        " webhooks that name it in any spelling (digits, +E164, whatsapp:+…, …@c.us,"
        " …@s.whatsapp.net, Brazil's number without its ninth digit…), the canonical feed,"
        " delivery records, and the read models (rebuilt from the masked log). An audit record"
        " with no personal data stays: who, when, which log positions, the SHA-256 of each"
        " body before. With ACKLOG_ARCHIVE_URL set, every archive holding the number is"
        " rewritten too. Exit 0: erased; 1: the number was found nowhere; 2: not a number;"
        " 4: erased from the database but the archives were NOT rewritten (the store failed):"
        " run the same command again.",
    )
    e.add_argument(
        "--phone",
        required=True,
        help="the number with its country code, in any spelling: '+55 11 98888-7777'",
    )
    e.add_argument(
        "--by",
        default=None,
        help="who asks, for the audit record (default: cli:<your user name>); no personal data"
        " of the subject",
    )
    e.add_argument("--json", action="store_true", help="print the audit record as JSON")
    e.set_defaults(fn=run)


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"


def run(args: argparse.Namespace) -> int:
    try:
        number = erasure.parse(args.phone)
    except erasure.InvalidPhone as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = settings_of(args)
    dsn = database_url(settings)
    by = args.by or f"cli:{_user()}"

    async def body() -> erasure.Erased:
        await wait_and_migrate(dsn)
        return await erasure.erase(
            dsn,
            number,
            by,
            workers=settings.rebuild_workers or None,
            archive_url=settings.archive_url,
            progress=None if args.json else _progress,
        )

    done = asyncio.run(body())
    if args.json:
        print(msgspec.json.encode(done).decode())
    elif done.matched:
        rebuilt = (
            f"read models rebuilt to position {done.rebuilt_to}"
            if done.rebuilt_to is not None
            else "read models unchanged"
        )
        print(
            f"erasure {done.id}: masked {done.events} events of the log, {done.feed_events} feed"
            f" events and {done.feed_rows} other feed rows; {rebuilt}"
        )
    else:
        print(f"erasure {done.id}: the number was found nowhere; nothing was changed")
    if done.archives == "done" and not args.json:
        print(
            f"erasure {done.id}: {done.archives_rewritten} of {done.archives_scanned} archives"
            " held the number and were rewritten"
        )
    if done.archives == "pending":
        print(
            f"error: erasure {done.id}: the archives were NOT rewritten and may still hold the"
            f" number: {done.archives_error}. Run the same `acklog erase` again once the store"
            " answers",
            file=sys.stderr,
        )
        return 4
    return 0 if done.matched else 1


def _progress(line: str) -> None:
    print(line, flush=True)
