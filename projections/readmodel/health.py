"""Instance health: what no provider says directly about a channel's phone, from the log.

A provider reports its instance's connection (``instance_status``); acklog derives three
things it never says (invariant 7: all on our clock, ``received_at``):

- **The status run and its debounced form.** A report whose status differs from the
  channel's previous one (log order) is a *change* (``instance_history.changed``); the
  run keeps when the current status began (``changed_at``) and the last status that held
  for :data:`DEBOUNCE` before it changed (``stable_status``). The debounced status, now,
  is the current one once it has held for :data:`DEBOUNCE`, else that stable one
  (:func:`debounced`). The fold computes the run in log order (:func:`next_run`), so a
  rebuild gives the same rows as the live projector.
- **Flapping**: more than ``flap_changes`` changes within the last ``flap_window``.
- **Silence** while the instance says connected (:data:`CONNECTED`): ``silent_no_acks``
  when messages sent since the channel's last ack have waited ``silent_acks`` for one
  (acks of other messages would show the webhooks work: one recipient's phone being off is
  not silence); ``silent_no_traffic`` when nothing was sent nor acked for
  ``silent_traffic`` (and the instance has been connected that long).

:func:`assess` is the one rule that turns these into a channel's health; the API, the
console and the metrics snapshot all read it through :func:`channel_health`.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, TypeAlias, get_args

import asyncpg
import msgspec

from eventstore import channels
from projections.readmodel import LIVE

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

#: Instance statuses that mean "the session is up" (extend it when the vocabulary grows).
CONNECTED: frozenset[str] = frozenset({"connected"})
#: How long a status must hold to become the debounced status.
DEBOUNCE = dt.timedelta(seconds=60)

Health = Literal[
    "ok", "flapping", "silent_no_acks", "silent_no_traffic", "not_connected", "unknown"
]
HEALTHS: tuple[Health, ...] = get_args(Health)
Silence = Literal["no_acks", "no_traffic"]


class Run(msgspec.Struct, frozen=True):
    """A channel's current status run (columns of ``instance_status``)."""

    status: str
    changed_at: dt.datetime
    stable_status: str | None = None


def next_run(previous: Run | None, status: str, at: dt.datetime) -> tuple[Run, bool]:
    """The run after a report of ``status`` at ``at`` (log order), and whether it changed."""
    if previous is None:
        return Run(status, at), True
    if previous.status == status:
        return previous, False
    held = at - previous.changed_at >= DEBOUNCE
    return Run(status, at, previous.status if held else previous.stable_status), True


def debounced(run: Run, now: dt.datetime) -> str | None:
    """The status that has held for :data:`DEBOUNCE` (None: none has yet)."""
    return run.status if now - run.changed_at >= DEBOUNCE else run.stable_status


class HealthSettings(msgspec.Struct, frozen=True, kw_only=True):
    """A channel's health thresholds (the defaults are those of sql/066_instance_health.sql)."""

    flap_changes: int = 5
    flap_window: dt.timedelta = dt.timedelta(seconds=300)
    silent_acks: dt.timedelta = dt.timedelta(seconds=900)
    silent_traffic: dt.timedelta = dt.timedelta(hours=6)


DEFAULT_SETTINGS = HealthSettings()


class Assessment(msgspec.Struct, frozen=True, kw_only=True):
    health: Health
    flapping: bool
    silent: Silence | None


def assess(
    run: Run | None,
    *,
    changes: int,
    last_out_at: dt.datetime | None,
    last_ack_at: dt.datetime | None,
    waiting_since: dt.datetime | None,
    settings: HealthSettings,
    now: dt.datetime,
) -> Assessment:
    """The one health rule: flapping first, then silence while connected."""
    if run is None:
        return Assessment(health="unknown", flapping=False, silent=None)
    flapping = changes > settings.flap_changes
    silent: Silence | None = None
    if run.status in CONNECTED:
        if waiting_since is not None and now - waiting_since >= settings.silent_acks:
            silent = "no_acks"
        else:
            latest = max(t for t in (last_out_at, last_ack_at, run.changed_at) if t is not None)
            if now - latest >= settings.silent_traffic:
                silent = "no_traffic"
    health: Health
    if flapping:
        health = "flapping"
    elif silent == "no_acks":
        health = "silent_no_acks"
    elif silent == "no_traffic":
        health = "silent_no_traffic"
    else:
        health = "ok" if run.status in CONNECTED else "not_connected"
    return Assessment(health=health, flapping=flapping, silent=silent)


# -- reads ---------------------------------------------------------------------------------


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
