"""``acklog subscriptions …``: subscriptions to the canonical feed, dead letters, replays."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from typing import Any

import msgspec

from eventstore.pool import connect
from projections.feed import events as fe
from projections.feed import store
from projections.feed import subscriptions as subs
from projections.feed.outbox import rewind
from service.core.config import from_env
from service.core.database import database_url, wait_and_migrate
from service.feed import outbound


def _line(s: subs.Subscription) -> str:
    paused = f" ({s.paused_reason})" if s.paused_reason else ""
    return (
        f"{s.name}\t{s.url}\t{s.status}{paused}\tchannels={','.join(s.channels) or '*'}"
        f"\tevents={','.join(s.events) or '*'}\tcursor={s.cursor}"
    )


def _when(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date-time: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


async def _run(args: argparse.Namespace, conn: Any) -> int:
    policy = outbound.Policy.of(from_env().feed)
    a = args.action
    if a == "add":
        await outbound.check_url(args.url, policy)
        sub, secret = await subs.add(
            conn,
            args.name,
            args.url,
            channels=args.channel,
            events=args.events,
            from_start=args.from_start,
        )
        print(f"subscription {sub.name} added: {sub.url}")
        print(f"signing secret (Standard Webhooks; shown once): {secret}")
    elif a == "list":
        rows = await subs.list_all(conn)
        if args.json:
            print(msgspec.json.encode(rows).decode())
        elif not rows:
            print("no subscriptions yet: acklog subscriptions add NAME --url URL")
        for s in rows if not args.json else []:
            print(_line(s))
    elif a == "update":
        if args.url:
            await outbound.check_url(args.url, policy)
        print(
            _line(
                await subs.update(
                    conn, args.name, url=args.url, channels=args.channel, events=args.events
                )
            )
        )
    elif a == "pause":
        print(_line(await subs.set_status(conn, args.name, "paused", "paused by the operator")))
    elif a == "resume":
        print(_line(await subs.set_status(conn, args.name, "active")))
    elif a == "remove":
        await subs.remove(conn, args.name)
        print(f"subscription {args.name} removed")
    elif a == "rotate-secret":
        secret = await subs.rotate_secret(conn, args.name, dt.timedelta(seconds=args.overlap))
        print(f"new signing secret of {args.name} (shown once): {secret}")
        print(f"the previous secret(s) keep signing for {args.overlap:g} s")
    elif a == "dead-letters":
        letters = await subs.dead_letters(
            conn, subscription=args.name, include_replayed=args.all, limit=args.limit
        )
        if args.json:
            print(msgspec.json.encode(letters).decode())
        for d in letters if not args.json else []:
            replayed = f"\treplayed {d.replayed_at:%Y-%m-%d %H:%M:%S}" if d.replayed_at else ""
            print(
                f"{d.id}\t{d.subscription}\tseq={d.seq}\t{d.event_id}\t{d.type}"
                f"\t{d.dead_at:%Y-%m-%d %H:%M:%S}\t{d.error}{replayed}"
            )
    elif a == "replay":
        n = await subs.replay(
            conn,
            subscription=args.name,
            event_id=args.event_id,
            seq_from=args.from_seq,
            seq_to=args.to_seq,
            since=args.since,
            until=args.until,
        )
        print(f"{n} dead letter(s) queued for delivery again")
    elif a == "rebuild-feed":
        await rewind(conn)
        print(
            "the feed's state and checkpoint are reset: the outbox projector derives the log"
            " again from its start (events already in the feed keep their seq and id; new ones,"
            " after a decoder fix, are appended and delivered)"
        )
    elif a == "redeliver":
        if args.from_position is not None:
            cursor = await store.first_seq_from_position(conn, args.from_position)
        else:
            cursor = max(args.from_seq - 1, 0)
        sub = await subs.rewind(conn, args.name, cursor)
        print(f"{sub.name} will receive the feed again after seq {sub.cursor}")
    return 0


def run(args: argparse.Namespace) -> int:
    dsn = database_url(from_env())

    async def body() -> int:
        await wait_and_migrate(dsn)
        conn = await connect(dsn)
        try:
            return await _run(args, conn)
        except (subs.SubscriptionError, outbound.Refused) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            await conn.close()

    return asyncio.run(body())


def add_arguments(p: argparse.ArgumentParser) -> None:
    sp = p.add_subparsers(dest="action", required=True)

    def filters(x: argparse.ArgumentParser) -> None:
        x.add_argument("--channel", action="append", help="only this channel (repeatable)")
        x.add_argument("--events", nargs="+", choices=fe.EVENT_TYPES, help="only these event types")

    add = sp.add_parser("add", help="subscribe an endpoint; prints its signing secret once")
    add.add_argument("name")
    add.add_argument("--url", required=True)
    filters(add)
    add.add_argument(
        "--from-start", action="store_true", help="deliver the whole feed, not only new events"
    )
    ls = sp.add_parser("list", help="list subscriptions")
    ls.add_argument("--json", action="store_true")
    up = sp.add_parser("update", help="change the URL or the filters")
    up.add_argument("name")
    up.add_argument("--url")
    filters(up)
    for verb, text in (
        ("pause", "stop delivering (the backlog is kept)"),
        ("resume", "deliver again from where it stopped (closes the circuit)"),
        ("remove", "remove a subscription"),
    ):
        sp.add_parser(verb, help=text).add_argument("name")
    rot = sp.add_parser("rotate-secret", help="new signing secret; the old one overlaps")
    rot.add_argument("name")
    rot.add_argument(
        "--overlap", type=float, default=86400.0, help="seconds the old secret keeps signing"
    )
    dl = sp.add_parser("dead-letters", help="events whose attempts were exhausted")
    dl.add_argument("name", nargs="?")
    dl.add_argument("--all", action="store_true", help="also those already replayed")
    dl.add_argument("--limit", type=int, default=100)
    dl.add_argument("--json", action="store_true")
    rp = sp.add_parser("replay", help="send dead letters again (by event id, seq range or time)")
    rp.add_argument("name", nargs="?")
    rp.add_argument("--event-id")
    rp.add_argument("--from-seq", type=int)
    rp.add_argument("--to-seq", type=int)
    rp.add_argument("--since", type=_when, help="dead since (ISO date-time, UTC if no zone)")
    rp.add_argument("--until", type=_when)
    sp.add_parser(
        "rebuild-feed", help="derive the whole feed again from the log (after a decoder fix)"
    )
    rd = sp.add_parser("redeliver", help="deliver the feed again from a log position or seq")
    rd.add_argument("name")
    g = rd.add_mutually_exclusive_group(required=True)
    g.add_argument("--from-position", type=int, help="first log position to deliver again")
    g.add_argument("--from-seq", type=int, help="first feed seq to deliver again")
