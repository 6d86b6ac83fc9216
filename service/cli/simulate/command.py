"""The ``acklog simulate`` command: a temporary token, the simulation, a readable summary.

Tokens are stored hashed, so the simulator cannot reuse the channel's own: it adds one for the
run and revokes it when done, whatever happens (the revoked row stays for the record).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp

from eventstore import channels as registry
from eventstore.pool import connect
from projections import providers
from service.cli.simulate.scenarios import ALL, SCENARIOS
from service.cli.simulate.send import Sent, SimulationResult, simulate
from service.core.config import from_env
from service.core.database import database_url, wait_and_migrate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("channel", help="an existing channel (its provider sets the format)")
    p.add_argument("--scenario", choices=(*SCENARIOS, ALL), default=ALL)
    p.add_argument("--url", help="acklog base URL (default: ACKLOG_PUBLIC_URL or host:port)")
    p.add_argument("--count", type=int, default=1, help="rounds, each with fresh ids")
    p.add_argument("--seed", type=int, help="repeat a run exactly (same ids and bodies)")


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(main(args))
    except KeyboardInterrupt:
        return 130


def _line(sent: Sent) -> None:
    mark = "" if sent.ok else "  <-- refused"
    print(f"  {sent.status} {sent.answer:<18} {sent.label}  [{sent.raw}]{mark}", flush=True)


async def main(args: argparse.Namespace) -> int:
    """The command, awaitable (tests run it inside their own event loop)."""
    settings = from_env()
    base = (args.url or settings.base_url).rstrip("/")
    dsn = database_url(settings)
    await wait_and_migrate(dsn)
    conn = await connect(dsn)
    try:
        channel = await registry.get(conn, args.channel)
        if channel is None:
            print(f"error: no channel {args.channel!r}; add one first:", file=sys.stderr)
            print(f"  acklog channels add {args.channel} --provider <provider>", file=sys.stderr)
            return 2
        found = providers.find(channel.provider)
        signs = found is not None and found.signature is not None
        signed = " (signed)" if channel.secrets and signs else ""
        print(f"simulating {channel.provider} webhooks to {base}/hooks/{channel.name}{signed}")
        token_id, token = await registry.issue_token(conn, channel.name)
        try:
            result = await simulate(
                base,
                channel.name,
                channel.provider,
                token,
                args.scenario,
                args.count,
                channel.secrets,
                args.seed,
                on_sent=_line,
            )
        except aiohttp.ClientError as exc:
            print(f"error: cannot reach acklog at {base}: {exc}", file=sys.stderr)
            print("  is it running? start it with: make run", file=sys.stderr)
            return 2
        finally:
            await registry.revoke_token(conn, channel.name, token_id)
    finally:
        await conn.close()
    _summary(result)
    if args.scenario == "stuck":
        _stuck_hint(channel)
    return 0 if result.ok else 1


def _stuck_hint(channel: registry.Channel) -> None:
    sent, delivered = channel.sent_deadline_s, channel.delivered_deadline_s
    print(
        f"\nthese acks never come: the channel's deadlines make them missed acks in {sent:g}s"
        f" (sent) and {delivered:g}s (delivered) from now; then see"
        f'\n  acklog_missed_acks_total{{channel="{channel.name}"}} on /metrics,'
        f" the MissedAcksRising alert, and"
        f"\n  GET /v1/channels/{channel.name}/messages?overdue=true"
    )
    if sent > 60 or delivered > 60:
        print(
            f"to see misses within a minute, shorten the deadlines (the channel keeps its tokens;"
            f" messages already waiting keep theirs), then simulate again:"
            f"\n  acklog channels update {channel.name} --sent-deadline 20 --delivered-deadline 40"
        )


def _summary(result: SimulationResult) -> None:
    refused = sum(not r.ok for r in result.requests)
    total = len(result.requests)
    verdict = "all accepted" if not refused else f"{refused} refused"
    print(f"\n{total} webhooks sent to {result.channel} ({result.provider}): {verdict}")
    print("final state each message should reach once projected:")
    for m in result.messages:
        error = f" (error {m.error_code})" if m.error_code else ""
        print(f"  {m.scenario:<9} {m.key}  → {m.state}{error}")
    if result.instance is not None:
        print(f"  instance  → {result.instance}")
    for reason in result.skipped:
        print(f"skipped {reason}")
    for note in result.notes:
        print(f"note: {note}")
