"""The ``acklog`` command line: the parser of every command, and the entry point.

Each command lives in a module of its own (``serve``, ``channels``, ``keys``, ``rebuild``,
``tail``, ``subscriptions``, ``simulate``, ``backup``, ``archive``, ``erase``, ``retention``) with ``add_arguments`` and the function
that runs it.
"""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import os
import sys

from service.cli import archive, backup, channels, erase, keys, rebuild, retention, serve
from service.cli import subscriptions as feed_cli
from service.cli import tail as tail_command
from service.cli.simulate import command as simulate_command
from service.core import logs
from service.core.config import from_env
from service.core.database import DatabaseUnreachable

DESCRIPTION = (
    "acklog stores every webhook your WhatsApp gateways send (WAMM, Meta, WAHA, Twilio and"
    " more) in an append-only PostgreSQL log and folds it into each message's state, served"
    " by the query API, the web console and the canonical feed."
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="acklog", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"acklog {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve.add_arguments(
        sub.add_parser("serve", help="run the webhook service (every role, or one with --role)")
    )

    mig = sub.add_parser(
        "migrate",
        help="apply pending SQL migrations",
        description="Apply the pending SQL migrations (sql/), each once, in order, under an"
        " advisory lock, then exit. acklog serve does it at start too; run it ahead to"
        " migrate before a deploy.",
    )
    mig.set_defaults(fn=rebuild.migrate)

    backup.add_arguments(sub)
    archive.add_arguments(sub)
    erase.add_arguments(sub)
    retention.add_arguments(sub)
    channels.add_arguments(sub.add_parser("channels", help="manage channels (provider instances)"))
    keys.add_arguments(
        sub.add_parser(
            "keys",
            help="named API keys: add, list, revoke (rotation without a restart)",
            description="Named API keys, valid alongside the configured one. To rotate: keys"
            " add NEW, move the clients to it, keys revoke OLD; running processes see both"
            " within seconds.",
        )
    )

    subs = sub.add_parser(
        "subscriptions", help="subscriptions to the canonical feed (webhooks out)"
    )
    feed_cli.add_arguments(subs)
    subs.set_defaults(fn=feed_cli.run)

    proj = sub.add_parser(
        "project",
        help="run only the projector",
        description="Run only the projector: fold the log into the read models and follow"
        " it, until Ctrl-C. One leads at a time (per shard); others wait as standbys.",
    )
    proj.add_argument(
        "--shard",
        type=int,
        help="fold only shard K of ACKLOG_PROJECTOR_SHARDS (default: all of them here)",
    )
    proj.set_defaults(fn=rebuild.project)
    reb = sub.add_parser(
        "rebuild",
        help="replay the log into fresh read models and swap them in, live",
        description="Replay the whole log into fresh read models beside the live ones,"
        " then swap them in; the service keeps answering meanwhile.",
    )
    reb.add_argument(
        "--shards",
        type=int,
        help="record N live projection shards with the swap (the way to change"
        " ACKLOG_PROJECTOR_SHARDS; default: keep the number recorded)",
    )
    reb.set_defaults(fn=rebuild.rebuild)
    sub.add_parser(
        "verify",
        help="rebuild aside and compare with the live models (exit 1 on differences)",
        description="Rebuild the read models aside and compare them with the live ones,"
        " row by row; exit 0 when equal, 1 with the differences.",
    ).set_defaults(fn=rebuild.verify)
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
