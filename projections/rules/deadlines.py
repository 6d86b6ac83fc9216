"""Ack deadlines: what "missed" and "overdue" mean, each rule written once (invariant 7).

Deadlines run on our clock (``received_at``), from the report that started each wait:

- the **sent** stage waits while a message is ``sending``; due at ``sending.at + sent``;
- the **delivered** stage waits while it is ``sent``; due at ``sent.at + delivered``.

``missed_*`` is on record for ever (a late ack counts; the sweep marks the ones still
waiting when the deadline passes). ``overdue`` is evaluated now: still waiting, deadline
passed. :data:`WAITS` is the one table of that rule; :func:`overdue_for` is its Python
form and :func:`overdue_sql` / :func:`stage_overdue_sql` its SQL form, used by the sweep,
the API's listing filter, the message detail and the metrics snapshot. A property test
checks that the two forms agree on random rows.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, NamedTuple

import msgspec

from projections.facts import RANK
from projections.rules.message_state import MessageState

Stage = Literal["sent", "delivered"]


class Wait(NamedTuple):
    #: the state a message is in while it waits for this stage's ack
    state: str
    #: the ``messages`` column holding when that wait falls due
    due: str
    #: the ``messages`` column recording that this stage's deadline was missed
    missed: str


#: The overdue rule, once: stage → (waiting state, due column, missed column).
WAITS: dict[Stage, Wait] = {
    "sent": Wait("sending", "sent_due_at", "missed_sent"),
    "delivered": Wait("sent", "delivered_due_at", "missed_delivered"),
}


class Deadlines(msgspec.Struct, frozen=True):
    """A channel's deadlines (the defaults are those of ``sql/002_channels.sql``)."""

    sent: dt.timedelta = dt.timedelta(seconds=60)
    delivered: dt.timedelta = dt.timedelta(seconds=600)


DEFAULT_DEADLINES = Deadlines()


class MissedAcks(msgspec.Struct, kw_only=True):
    """Deadline bookkeeping of one message (columns of ``messages``, see .columns)."""

    sent_due_at: dt.datetime | None = None
    sent_by: dt.datetime | None = None
    missed_sent: bool = False
    delivered_due_at: dt.datetime | None = None
    delivered_by: dt.datetime | None = None
    missed_delivered: bool = False


MISSED_FIELDS: tuple[str, ...] = tuple(MissedAcks.__struct_fields__)


def overdue_for(
    state: str,
    sent_due_at: dt.datetime | None,
    delivered_due_at: dt.datetime | None,
    now: dt.datetime,
) -> Stage | None:
    """Which ack a message is overdue for at ``now`` (our clock), if any."""
    due = {"sent_due_at": sent_due_at, "delivered_due_at": delivered_due_at}
    for stage, wait in WAITS.items():
        at = due[wait.due]
        if state == wait.state and at is not None and at <= now:
            return stage
    return None


def stage_overdue_sql(stage: Stage, now: str, alias: str = "") -> str:
    """SQL: the message is overdue for ``stage`` at ``now`` (a parameter such as ``$1``).

    NULL when the due column is NULL (false in a WHERE; wrap in ``coalesce`` to negate).
    """
    p = f"{alias}." if alias else ""
    wait = WAITS[stage]
    return f"{p}state = '{wait.state}' AND {p}{wait.due} <= {now}"


def overdue_sql(now: str, alias: str = "") -> str:
    """SQL: the message is overdue for some stage at ``now``; the form of :func:`overdue_for`."""
    return "(" + " OR ".join(f"({stage_overdue_sql(s, now, alias)})" for s in WAITS) + ")"


def _first_reached(state: MessageState, rank: int) -> dt.datetime | None:
    times = [m.at for s, m in state.milestones.items() if RANK.get(s, -1) >= rank]
    return min(times) if times else None


def missed_acks(state: MessageState, deadlines: Deadlines, previous: MissedAcks) -> MissedAcks:
    """Deadlines run on our clock from the report that started each wait (invariant 7).

    A deadline counts as missed when the awaited ack came after it (a late ack); the sweep
    marks the ones still waiting when it passes. Once missed, always missed.
    """
    if state.direction != "outgoing":
        # no deadlines for a message that is not (or no longer looks) outgoing; what was
        # already missed stays missed. Dates kept from ``previous`` would depend on where
        # batches were cut, and a rebuild cuts them elsewhere than the live projector did.
        return MissedAcks(
            missed_sent=previous.missed_sent, missed_delivered=previous.missed_delivered
        )
    sending = state.milestones.get("sending")
    sent = state.milestones.get("sent")
    out = MissedAcks(
        sent_due_at=sending.at + deadlines.sent if sending else None,
        sent_by=_first_reached(state, RANK["sent"]),
        delivered_due_at=sent.at + deadlines.delivered if sent else None,
        delivered_by=_first_reached(state, RANK["not_sent"]),
    )
    out.missed_sent = previous.missed_sent or (
        out.sent_due_at is not None and out.sent_by is not None and out.sent_by > out.sent_due_at
    )
    out.missed_delivered = previous.missed_delivered or (
        out.delivered_due_at is not None
        and out.delivered_by is not None
        and out.delivered_by > out.delivered_due_at
    )
    return out
