"""``acklog serve``: every role under the supervisor (the default), or one role alone."""

from __future__ import annotations

import argparse
import asyncio
import logging

import msgspec

from service.cli.common import net_arguments, settings_of
from service.core import apikey, eventloop
from service.core.config import Settings
from service.core.database import database_url, embedded_server, wait_and_migrate
from service.runtime import roles


def add_arguments(serve: argparse.ArgumentParser) -> None:
    net_arguments(serve)
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
        " feed (outbox projector and subscription delivery), retention (ACKLOG_RETENTION)",
    )
    serve.add_argument(
        "--shard",
        type=int,
        help="with --role projector: fold only shard K of ACKLOG_PROJECTOR_SHARDS (default:"
        " all of them in this one process)",
    )
    serve.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    """Every role under a supervisor (the default), or one role alone (``--role``)."""
    settings = settings_of(args)
    if args.workers is not None:
        settings = msgspec.structs.replace(settings, workers=args.workers)
    if settings.workers < 1:
        raise SystemExit("--workers (ACKLOG_WORKERS) must be at least 1")
    if settings.retention is not None and not settings.archive_url:
        raise SystemExit(
            "ACKLOG_RETENTION needs ACKLOG_ARCHIVE_URL (file:///path or s3://bucket/prefix):"
            " retention archives every partition before it drops it"
        )
    if args.child:  # started by the supervisor: migrations are applied, the DSN is set
        roles.die_with_supervisor()
        return _serve_role(
            args.role, settings, database_url(settings), supervised=True, shard=args.shard
        )
    dsn = database_url(settings)
    asyncio.run(wait_and_migrate(dsn))
    if args.role in ("api", "projector", "feed", "retention"):
        return _serve_role(args.role, settings, dsn, supervised=False, shard=args.shard)
    if args.role == "ingest":
        if settings.workers <= 1:
            return _serve_role("ingest", settings, dsn, supervised=False)
        workers: list[roles.Role] = ["ingest"] * settings.workers
        ready = f"acklog {settings.workers} ingest workers listening on {settings.base_url}"
        return roles.supervise(
            settings,
            dsn,
            workers,
            lambda: print(ready, flush=True),
            embedded=embedded_server(settings),
        )
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
        + (
            ""
            if args.no_projector
            else ", projector"
            if settings.projector_shards == 1
            else f", projector in {settings.projector_shards} shards"
        )
        + ("" if args.no_feed else ", feed")
        + ("" if settings.retention is None else ", retention")
    )
    metrics_url = (
        f"{settings.base_url}/metrics"
        if settings.metrics_port is None
        else f"http://{settings.host}:{settings.metrics_port}/metrics (ACKLOG_METRICS_PORT)"
    )
    banner = (
        f"acklog listening on {settings.base_url} (database: {where}; {processes};"
        f" event loop: {eventloop.name(settings.loop)})\n"
        f"  add a channel:  .venv/bin/acklog channels add NAME --provider PROVIDER\n"
        f"  webhook URL:    {settings.base_url}/hooks/<channel>?token=<token>\n"
        f"  health:         {settings.base_url}/readyz   metrics: {metrics_url}\n"
        f"  query API:      {settings.base_url}/v1/channels   spec: {settings.base_url}/openapi.json\n"
        f"  API key:        {shown_key}; send 'Authorization: Bearer <key>'"
    )
    children = roles.child_roles(settings, projector=not args.no_projector, feed=not args.no_feed)
    # printed once every child serves: the banner means "ready to accept"
    code = roles.supervise(
        settings,
        dsn,
        children,
        lambda: print(banner, flush=True),
        embedded=embedded_server(settings),
    )
    logging.getLogger("acklog").info("acklog stopped (exit %d)", code)
    return code


def _serve_role(
    role: str, settings: Settings, dsn: str, *, supervised: bool, shard: int | None = None
) -> int:
    match role:
        case "ingest":
            roles.run_ingest(settings, dsn, announce=not supervised)
        case "api":
            roles.run_api(settings, dsn, supervised=supervised)
        case "projector":
            roles.run_projector(settings, dsn, shard)
        case "feed":
            roles.run_feed(settings, dsn)
        case "retention":
            roles.run_retention(settings, dsn)
        case _:
            raise SystemExit(f"unknown role {role!r}")
    return 0
