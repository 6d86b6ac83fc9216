"""Instance health at ``now``: the read model's runs, activity and recent changes, with each
channel's thresholds from the registry, assessed by the one rule (``rules.health.assess``)."""

from __future__ import annotations

import datetime as dt
from typing import TypeAlias

import asyncpg
import msgspec

from eventstore import channels
from projections.readmodel import LIVE
from projections.rules.health import (
    DEFAULT_SETTINGS,
    Health,
    HealthSettings,
    Run,
    Silence,
    assess,
    debounced,
)

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


class ChannelHealth(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    provider: str | None
    health: Health
    #: the latest status reported, and the one that has held for DEBOUNCE
    status: str | None
    debounced_status: str | None
    status_since: dt.datetime | None
    #: connection changes within the last ``settings.flap_window``
    changes: int
    flapping: bool
    silent: Silence | None
    last_out_at: dt.datetime | None
    last_ack_at: dt.datetime | None
    #: the oldest message sent since the last ack and still waiting for one
    waiting_since: dt.datetime | None
    settings: HealthSettings


RUNS_SQL = (
    f"SELECT channel, provider, status, coalesce(changed_at, received_at) AS changed_at,"
    f" stable_status FROM {LIVE}.instance_status"
)
ACTIVITY_SQL = f"SELECT channel, last_out_at, last_ack_at FROM {LIVE}.channel_activity"
WAITING_SQL = (
    f"SELECT m.channel, min(m.first_seen_at) AS since FROM {LIVE}.messages m"
    f" LEFT JOIN {LIVE}.channel_activity a ON a.channel = m.channel"
    " WHERE m.state = 'sending' AND m.sent_due_at IS NOT NULL"
    " AND (a.last_ack_at IS NULL OR m.first_seen_at > a.last_ack_at)"
    " GROUP BY m.channel"
)
CHANGES_SQL = (
    f"SELECT h.channel, count(*) AS n FROM {LIVE}.instance_history h"
    " JOIN unnest($1::text[], $2::timestamptz[]) AS w(channel, since)"
    " ON h.channel = w.channel AND h.received_at > w.since"
    " WHERE h.changed GROUP BY h.channel"
)


async def load_settings(conn: Conn) -> dict[str, HealthSettings]:
    """Each registered channel's thresholds (read from the registry, ``eventstore.channels``)."""
    return {
        name: HealthSettings(
            flap_changes=t.flap_changes,
            flap_window=dt.timedelta(seconds=t.flap_window_s),
            silent_acks=dt.timedelta(seconds=t.silent_acks_s),
            silent_traffic=dt.timedelta(seconds=t.silent_traffic_s),
        )
        for name, t in (await channels.thresholds(conn)).items()
    }


async def channel_health(conn: asyncpg.Connection, now: dt.datetime) -> dict[str, ChannelHealth]:
    """Every channel the read model or the registry knows, assessed at ``now`` (our clock),
    from one snapshot (the caller's transaction, or one opened here)."""
    if conn.is_in_transaction():
        return await _channel_health(conn, now)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _channel_health(conn, now)


async def _channel_health(conn: asyncpg.Connection, now: dt.datetime) -> dict[str, ChannelHealth]:
    settings = await load_settings(conn)
    runs = {r["channel"]: r for r in await conn.fetch(RUNS_SQL)}
    activity = {r["channel"]: r for r in await conn.fetch(ACTIVITY_SQL)}
    waiting = {r["channel"]: r["since"] for r in await conn.fetch(WAITING_SQL)}
    names = sorted(settings.keys() | runs.keys() | activity.keys())
    windows = [now - settings.get(n, DEFAULT_SETTINGS).flap_window for n in names]
    changes = {r["channel"]: r["n"] for r in await conn.fetch(CHANGES_SQL, names, windows)}
    out: dict[str, ChannelHealth] = {}
    for name in names:
        s = settings.get(name, DEFAULT_SETTINGS)
        r = runs.get(name)
        run = Run(r["status"], r["changed_at"], r["stable_status"]) if r is not None else None
        a = activity.get(name)
        last_out = a["last_out_at"] if a is not None else None
        last_ack = a["last_ack_at"] if a is not None else None
        verdict = assess(
            run,
            changes=changes.get(name, 0),
            last_out_at=last_out,
            last_ack_at=last_ack,
            waiting_since=waiting.get(name),
            settings=s,
            now=now,
        )
        out[name] = ChannelHealth(
            channel=name,
            provider=r["provider"] if r is not None else None,
            health=verdict.health,
            status=run.status if run else None,
            debounced_status=debounced(run, now) if run else None,
            status_since=run.changed_at if run else None,
            changes=changes.get(name, 0),
            flapping=verdict.flapping,
            silent=verdict.silent,
            last_out_at=last_out,
            last_ack_at=last_ack,
            waiting_since=waiting.get(name),
            settings=s,
        )
    return out
