"""The ``acklog`` command line."""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib.metadata
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from eventstore import channels as registry
from eventstore.pool import connect
from projections.providers import PROVIDERS
from projections.rebuild import Progress, RebuildBusy, bulk_load, rebuild, verify
from projections.runner import Projector
from service.cli import subscriptions as feed_cli
from service.cli import tail as tail_command
from service.cli.simulate import command as simulate_command
from service.core import apikey, eventloop, logs
from service.core.config import Settings, from_env
from service.core.database import DatabaseUnreachable, database_url, wait_and_migrate
from service.ingest import channels
from service.metrics.observe import observe_batch
from service.runtime import roles


def _settings(args: argparse.Namespace) -> Settings:
    return from_env(host=getattr(args, "host", None), port=getattr(args, "port", None))


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


def cmd_serve(args: argparse.Namespace) -> int:
    """Every role under a supervisor (the default), or one role alone (``--role``)."""
    settings = _settings(args)
    if args.workers is not None:
        settings = msgspec.structs.replace(settings, workers=args.workers)
    if settings.workers < 1:
        raise SystemExit("--workers (ACKLOG_WORKERS) must be at least 1")
    if args.child:  # started by the supervisor: migrations are applied, the DSN is set
        roles.die_with_supervisor()
        return _serve_role(args.role, settings, database_url(settings), supervised=True)
    dsn = database_url(settings)
    asyncio.run(wait_and_migrate(dsn))
    if args.role in ("api", "projector", "feed"):
        return _serve_role(args.role, settings, dsn, supervised=False)
    if args.role == "ingest":
        if settings.workers <= 1:
            return _serve_role("ingest", settings, dsn, supervised=False)
        workers: list[roles.Role] = ["ingest"] * settings.workers
        ready = f"acklog {settings.workers} ingest workers listening on {settings.base_url}"
        return roles.supervise(settings, dsn, workers, lambda: print(ready, flush=True))
    _key, key_source = apikey.resolve(settings)
    # the key itself is never printed (the banner ends up in journald and container logs):
    # only where it is
    shown_key = "from ACKLOG_API_KEY" if key_source == "ACKLOG_API_KEY" else key_source
    where = (
        "DATABASE_URL"
        if settings.database_url
        else f"embedded PostgreSQL in {settings.data_dir}/pg"
    )
    processes = (
        f"{settings.workers} ingest worker(s), query API"
        + ("" if args.no_projector else ", projector")
        + ("" if args.no_feed else ", feed")
    )
    metrics_url = (
        f"{settings.base_url}/metrics"
        if settings.metrics_port is None
        else f"http://{settings.host}:{settings.metrics_port}/metrics (ACKLOG_METRICS_PORT)"
    )
    banner = (
        f"acklog listening on {settings.base_url} (database: {where}; {processes};"
        f" event loop: {eventloop.name()})\n"
        f"  add a channel:  .venv/bin/acklog channels add NAME --provider PROVIDER\n"
        f"  webhook URL:    {settings.base_url}/hooks/<channel>?token=<token>\n"
        f"  health:         {settings.base_url}/readyz   metrics: {metrics_url}\n"
        f"  query API:      {settings.base_url}/v1/channels   spec: {settings.base_url}/openapi.json\n"
        f"  API key:        {shown_key}; send 'Authorization: Bearer <key>'"
    )
    children = roles.child_roles(settings, projector=not args.no_projector, feed=not args.no_feed)
    # printed once every child serves: the banner means "ready to accept"
    code = roles.supervise(settings, dsn, children, lambda: print(banner, flush=True))
    logging.getLogger("acklog").info("acklog stopped (exit %d)", code)
    return code


def _serve_role(role: str, settings: Settings, dsn: str, *, supervised: bool) -> int:
    match role:
        case "ingest":
            roles.run_ingest(settings, dsn, announce=not supervised)
        case "api":
            roles.run_api(settings, dsn, supervised=supervised)
        case "projector":
            roles.run_projector(dsn)
        case "feed":
            roles.run_feed(dsn)
        case _:
            raise SystemExit(f"unknown role {role!r}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    asyncio.run(wait_and_migrate(database_url(settings)))
    print("migrations applied")
    return 0


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


def _channel_line(row: dict[str, object]) -> str:
    return (
        f"{row['name']}\t{row['provider']}\ttokens={row['tokens']}"
        f"\tsecrets={row['secrets']}\tallow={row['allow_cidrs']}"
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


def cmd_channels(args: argparse.Namespace) -> int:
    settings = _settings(args)
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


def _progress(label: str) -> Callable[[Progress], None] | None:
    """Progress on a terminal only (events done, rate, time left); silent in pipes and CI."""
    if not sys.stderr.isatty():
        return None

    def show(p: Progress) -> None:
        eta = f"{p.eta_seconds:.0f}s left" if p.eta_seconds is not None else ""
        print(
            f"\r{label}: {p.done:,}/{p.total:,} events, {p.rate:,.0f}/s, {eta}   ",
            end="",
            file=sys.stderr,
            flush=True,
        )

    return show


def _db_command(args: argparse.Namespace, body: Callable[[str], Awaitable[int]]) -> int:
    """Run ``body(dsn)`` once the database is up and migrated; Ctrl-C and a busy rebuild
    lock end the command with a clear exit code instead of a traceback."""
    dsn = database_url(_settings(args))

    async def run() -> int:
        await wait_and_migrate(dsn)
        return await body(dsn)

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0
    except RebuildBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_project(args: argparse.Namespace) -> int:
    """Run only the projector (leader, or standby while another one leads)."""

    async def body(dsn: str) -> int:
        await Projector(dsn, on_batch=observe_batch, bulk_load=bulk_load).run()
        return 0

    return _db_command(args, body)


def cmd_rebuild(args: argparse.Namespace) -> int:
    async def body(dsn: str) -> int:
        started = time.monotonic()
        position = await rebuild(dsn, progress=_progress("rebuild"))
        took = time.monotonic() - started
        print(f"\nrebuilt the read models up to position {position} in {took:.1f}s; swapped in")
        return 0

    return _db_command(args, body)


def cmd_verify(args: argparse.Namespace) -> int:
    async def body(dsn: str) -> int:
        diffs = await verify(dsn, progress=_progress("verify"))
        if not diffs:
            print("\nverify: the live read models equal a rebuild from the log")
            return 0
        print("\nverify: the live read models differ from a rebuild from the log:")
        for d in diffs:
            print(f"  {d.table}: {d.only_live} rows only live, {d.only_rebuilt} only rebuilt")
            for example in d.examples:
                print(f"    e.g. {example}")
        return 1

    return _db_command(args, body)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="acklog", description=__doc__)
    p.add_argument("--version", action="version", version=f"acklog {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def net(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--host", help="listen address (ACKLOG_HOST, default 127.0.0.1)")
        sp.add_argument("--port", type=int, help="listen port (ACKLOG_PORT, default 8080)")

    serve = sub.add_parser("serve", help="run the webhook service (every role, or one with --role)")
    net(serve)
    serve.add_argument("--no-projector", action="store_true", help="run no projector")
    serve.add_argument(
        "--no-feed", action="store_true", help="run no feed (outbox projector and delivery)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="ingest worker processes on the port (ACKLOG_WORKERS, default 1)",
    )
    serve.add_argument(
        "--role",
        choices=roles.ROLES,
        help="run one role alone: ingest (webhooks; non-webhook paths relayed to"
        " ACKLOG_API_UPSTREAM), api (query API, metrics; ACKLOG_API_PORT or --port), projector,"
        " feed (outbox projector and subscription delivery)",
    )
    serve.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(fn=cmd_serve)

    mig = sub.add_parser("migrate", help="apply pending SQL migrations")
    mig.set_defaults(fn=cmd_migrate)

    ch = sub.add_parser("channels", help="manage channels (provider instances)")
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
    net(add)
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
    net(up)
    up.add_argument("name")
    deadlines(up)
    up.add_argument("--allow-any", action="store_true", help="drop the allow-list")
    up.add_argument("--no-basic-user", action="store_true", help="drop the Basic user")
    ls = chs.add_parser("list", help="list channels with token and secret ids")
    ls.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    rm = chs.add_parser("remove", help="remove a channel (its events stay)")
    rm.add_argument("name")
    at = chs.add_parser("add-token", help="add a token (rotation); prints its id")
    net(at)
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
    ch.set_defaults(fn=cmd_channels)

    subs = sub.add_parser(
        "subscriptions", help="subscriptions to the canonical feed (webhooks out)"
    )
    feed_cli.add_arguments(subs)
    subs.set_defaults(fn=feed_cli.run)

    sub.add_parser("project", help="run only the projector").set_defaults(fn=cmd_project)
    sub.add_parser(
        "rebuild", help="replay the log into fresh read models and swap them in, live"
    ).set_defaults(fn=cmd_rebuild)
    sub.add_parser(
        "verify", help="rebuild aside and compare with the live models (exit 1 on differences)"
    ).set_defaults(fn=cmd_verify)
    sim = sub.add_parser("simulate", help="send realistic provider webhooks to a running acklog")
    simulate_command.add_arguments(sim)
    sim.set_defaults(fn=simulate_command.run)
    tl = sub.add_parser("tail", help="print each event as it arrives, decoded (Ctrl-C to stop)")
    tail_command.add_arguments(tl)
    tl.set_defaults(fn=tail_command.run)
    return p


#: options whose value is a credential, which may start with "-" (argparse would read it as
#: an option): ``--token -x`` is passed on as ``--token=-x``
_CREDENTIAL_OPTIONS = ("--token", "--secret")


def _glue_credentials(argv: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _CREDENTIAL_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _version() -> str:
    try:
        return importlib.metadata.version("acklog")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    settings = from_env()
    logs.configure(settings.log_format, settings.log_level)
    args = parser().parse_args(_glue_credentials(sys.argv[1:] if argv is None else argv))
    try:
        code: int = args.fn(args)
    except DatabaseUnreachable as exc:
        return _fail(str(exc), 3)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return _fail(
                f"{exc.strerror or exc}: another acklog (or another program) listens there;"
                " stop it, or choose another port with --port / ACKLOG_PORT"
                " (metrics: ACKLOG_METRICS_PORT)",
                4,
            )
        if isinstance(exc, BrokenPipeError):
            # `acklog simulate | head`: the reader has gone, which is not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        raise
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
