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
console and the metrics snapshot all read it through ``readmodel.health.channel_health``.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, get_args

import msgspec

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
