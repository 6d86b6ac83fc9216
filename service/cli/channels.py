"""``acklog channels``: add, update, list and remove channels; rotate tokens and secrets."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from eventstore import channels as registry
from eventstore.pool import connect
from projections.providers import PROVIDERS
from service.cli.common import settings_of, url_arguments
from service.core.config import Settings
from service.core.database import database_url, wait_and_migrate
from service.ingest import channels


def add_arguments(ch: argparse.ArgumentParser) -> None:
    chs = ch.add_subparsers(dest="action", required=True)

    def deadlines(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--sent-deadline", type=float, help="seconds to 'sent' (default 60)")
        sp.add_argument("--delivered-deadline", type=float, help="seconds to 'delivered' (600)")
        sp.add_argument("--allow", action="append", help="allowed client CIDR (repeatable)")
        sp.add_argument("--basic-user", help="require this user name with Basic auth")
        sp.add_argument(
            "--flap-changes", type=int, help="flapping above this many changes (default 5)"
        )
        sp.add_argument(
            "--flap-window", type=float, help="seconds the changes are counted over (300)"
        )
        sp.add_argument(
            "--silent-acks", type=float, help="seconds sent messages wait for any ack (900)"
        )
        sp.add_argument("--silent-traffic", type=float, help="seconds with nothing sent (21600)")

    add = chs.add_parser("add", help="add a channel and print its webhook URL")
    url_arguments(add)
    add.add_argument("name")
    add.add_argument("--provider", required=True, choices=PROVIDERS)
    add.add_argument(
        "--token", help="use this token instead of a random one (--token=-T if T starts with -)"
    )
    add.add_argument("--secret", action="append", help="HMAC signing secret (repeatable)")
    add.add_argument(
        "--secret-file", action="append", help="read a signing secret from a file, - for stdin"
    )
    deadlines(add)
    up = chs.add_parser("update", help="change deadlines, allow-list or Basic user (tokens stay)")
    up.add_argument("name")
    deadlines(up)
    up.add_argument("--allow-any", action="store_true", help="drop the allow-list")
    up.add_argument("--no-basic-user", action="store_true", help="drop the Basic user")
    ls = chs.add_parser(
        "list", help="list channels with their token and secret ids and when each was added"
    )
    ls.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    rm = chs.add_parser("remove", help="remove a channel (its events stay)")
    rm.add_argument("name")
    at = chs.add_parser("add-token", help="add a token (rotation); prints its id")
    url_arguments(at)
    at.add_argument("name")
    at.add_argument("--token")
    rt = chs.add_parser("revoke-token", help="revoke a token by id")
    rt.add_argument("name")
    rt.add_argument("id", type=int)
    asx = chs.add_parser("add-secret", help="add an HMAC signing secret (stdin when omitted)")
    asx.add_argument("name")
    asx.add_argument("secret", nargs="?", help="the secret; omit or - to read it from stdin")
    asx.add_argument("--secret-file", help="read the secret from this file")
    rs = chs.add_parser("revoke-secret", help="revoke a signing secret by id")
    rs.add_argument("name")
    rs.add_argument("id", type=int)
    ch.set_defaults(fn=run)


async def _with_conn(settings: Settings, fn: Callable[[Any], Awaitable[int]]) -> int:
    dsn = database_url(settings)
    await wait_and_migrate(dsn)
    conn = await connect(dsn)
    try:
        return await fn(conn)
    except registry.ChannelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await conn.close()


def _read_secret(path: str) -> str:
    """A secret from a file, or from stdin for ``-`` (kept out of ``ps`` and shell history)."""
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise registry.ChannelError(f"cannot read the secret from {path}: {exc.strerror}") from None
    secret = text.strip()
    if not secret:
        raise registry.ChannelError(f"no secret in {'stdin' if path == '-' else path}")
    return secret


def _created(ids: Any, times: Any) -> str:
    """``[id@created, …]``: each credential's id and when it was added (UTC)."""
    return (
        "["
        + ", ".join(
            f"{i}@{t.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
            for i, t in zip(ids, times, strict=True)
        )
        + "]"
    )


def _channel_line(row: dict[str, Any]) -> str:
    return (
        f"{row['name']}\t{row['provider']}"
        f"\ttokens={_created(row['tokens'], row['token_created_at'])}"
        f"\tsecrets={_created(row['secrets'], row['secret_created_at'])}"
        f"\tallow={row['allow_cidrs']}"
        f"\tbasic_user={row['basic_user'] or '-'}"
        f"\tdeadlines={row['sent_deadline_s']:g}s/{row['delivered_deadline_s']:g}s"
        f"\tflapping={row['flap_changes']}/{row['flap_window_s']:g}s"
        f"\tsilent={row['silent_acks_s']:g}s/{row['silent_traffic_s']:g}s"
    )


def _health(args: argparse.Namespace) -> registry.HealthSettings:
    return registry.HealthSettings(
        flap_changes=args.flap_changes,
        flap_window_s=args.flap_window,
        silent_acks_s=args.silent_acks,
        silent_traffic_s=args.silent_traffic,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    base = settings.base_url

    async def run(conn: Any) -> int:
        if args.action == "add":
            secrets_ = list(args.secret or []) + [_read_secret(f) for f in args.secret_file or []]
            token = await channels.add(
                conn,
                args.name,
                args.provider,
                token=args.token,
                basic_user=args.basic_user,
                secrets_=secrets_,
                allow_cidrs=args.allow,
                sent_deadline_s=args.sent_deadline,
                delivered_deadline_s=args.delivered_deadline,
                health=_health(args),
            )
            print(f"channel {args.name} ({args.provider}) added")
            print(f"webhook URL: {base}/hooks/{args.name}?token={token}")
            print("the token is shown once; it is stored hashed")
        elif args.action == "update":
            await channels.update(
                conn,
                args.name,
                basic_user=registry.CLEAR if args.no_basic_user else args.basic_user,
                allow_cidrs=[] if args.allow_any else args.allow,
                sent_deadline_s=args.sent_deadline,
                delivered_deadline_s=args.delivered_deadline,
                health=_health(args),
            )
            row = next(r for r in await registry.describe(conn) if r["name"] == args.name)
            print(f"channel {args.name} updated (tokens and secrets unchanged)")
            print(_channel_line(row))
        elif args.action == "list":
            rows = await registry.describe(conn)
            if args.json:
                print(msgspec.json.encode(rows).decode())
            elif not rows:
                print("no channels yet: acklog channels add NAME --provider P")
            for row in rows if not args.json else []:
                print(_channel_line(row))
        elif args.action == "remove":
            await registry.remove(conn, args.name)
            print(f"channel {args.name} removed (its events stay in the log)")
        elif args.action == "add-token":
            token_id, token = await registry.issue_token(conn, args.name, args.token)
            print(f"token {token_id} added to {args.name}: {base}/hooks/{args.name}?token={token}")
            print(f"revoke the old one with: acklog channels revoke-token {args.name} ID")
        elif args.action == "revoke-token":
            await registry.revoke_token(conn, args.name, args.id)
            print(f"token {args.id} of {args.name} revoked")
        elif args.action == "add-secret":
            secret = args.secret
            if args.secret_file or secret in (None, "-"):
                secret = _read_secret(args.secret_file or "-")
            secret_id = await registry.add_secret(conn, args.name, secret)
            print(f"secret {secret_id} added to {args.name}")
        elif args.action == "revoke-secret":
            await registry.revoke_secret(conn, args.name, args.id)
            print(f"secret {args.id} of {args.name} revoked")
        return 0

    return asyncio.run(_with_conn(settings, run))
