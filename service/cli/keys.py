"""``acklog keys``: named API keys, several valid at once, to rotate without a restart."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from eventstore import apikeys
from eventstore.pool import connect
from service.cli.common import settings_of
from service.core.database import database_url, wait_and_migrate


def add_arguments(k: argparse.ArgumentParser) -> None:
    ks = k.add_subparsers(dest="action", required=True)
    add = ks.add_parser(
        "add",
        help="add a named API key and print it (once)",
        description="Add a named API key, valid at once alongside the others, and print it:"
        " the key alone on stdout (for scripts), the rest on stderr. It is shown once and"
        " stored hashed.",
    )
    add.add_argument("name", help="1-64 letters, digits, '.', '_' or '-'; never reused")
    ls = ks.add_parser(
        "list",
        help="list named API keys: name, created, revoked (never the key)",
        description="List the named API keys with their creation and revocation times.",
    )
    ls.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    rv = ks.add_parser(
        "revoke",
        help="revoke a named API key (refused within seconds, console sessions end)",
        description="Revoke a named API key: every acklog process refuses it within seconds,"
        " without a restart, and the console sessions signed in with it end.",
    )
    rv.add_argument("name")
    k.set_defaults(fn=run)


def _time(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


def _line(key: apikeys.KeyInfo) -> str:
    return f"{key.name}\tcreated={_time(key.created_at)}\trevoked={_time(key.revoked_at)}"


async def _with_conn(args: argparse.Namespace, fn: Callable[[Any], Awaitable[int]]) -> int:
    dsn = database_url(settings_of(args))
    await wait_and_migrate(dsn)
    conn = await connect(dsn)
    try:
        return await fn(conn)
    except apikeys.ApiKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        await conn.close()


def run(args: argparse.Namespace) -> int:
    async def run(conn: Any) -> int:
        if args.action == "add":
            key = await apikeys.add(conn, args.name)
            print(key, flush=True)
            print(
                f"API key {args.name} added; it is shown once (stored hashed). Give it to the"
                f" clients, then revoke the old key: acklog keys revoke OLD",
                file=sys.stderr,
            )
        elif args.action == "list":
            keys = await apikeys.describe(conn)
            if args.json:
                print(msgspec.json.encode(keys).decode())
            elif not keys:
                print("no named API keys yet (the configured key works): acklog keys add NAME")
            for info in keys if not args.json else []:
                print(_line(info))
        elif args.action == "revoke":
            await apikeys.revoke(conn, args.name)
            print(f"API key {args.name} revoked; every acklog refuses it within seconds")
        return 0

    return asyncio.run(_with_conn(args, run))
