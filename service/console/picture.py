"""A message's history as the console draws it: steps, marks and the reason for its state.

Pure functions of the query API's ``MessageDetail``: the same facts the API answers, arranged
for a person. Steps follow the state machine's ranks (``projections.facts.RANK``); a step is
*reported* when a provider said so, *implied* when a higher one was reported (Meta may skip
``delivered`` when ``read`` implies it), else *pending*. Latency is measured on our clock
from the previous reported step. A timeline entry is *out of order* when it arrived after a
higher-ranked one; a *duplicate* is a webhook stored again byte for byte.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

from projections.facts import RANK
from projections.rules.message_state import INCOMING_STATES
from service.reads.models import MessageDetail, TimelineEntry

Reached = Literal["reported", "implied", "pending"]

OUTGOING_PATH: tuple[str, ...] = ("sending", "sent", "delivered", "read", "played")
INCOMING_PATH: tuple[str, ...] = ("received",)


class Step(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    reached: Reached
    at: dt.datetime | None = None
    provider_time: float | None = None
    position: int | None = None
    #: seconds on our clock since the previous reported step (negative: it came first)
    latency: float | None = None
    #: the deadline this step was waited for with, and whether it was missed
    due_at: dt.datetime | None = None
    missed: bool = False
    overdue: bool = False
    failure: bool = False
    detail: str | None = None


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    item: TimelineEntry
    duplicate: bool
    out_of_order: bool
    failure: bool


class Picture(msgspec.Struct, frozen=True, kw_only=True):
    steps: list[Step]
    entries: list[Entry]
    why: list[str]


def _ranks(direction: str) -> dict[str, int]:
    return INCOMING_STATES if direction == "incoming" else RANK


def steps(m: MessageDetail) -> list[Step]:
    ranks = _ranks(m.direction)
    path = list(INCOMING_PATH if m.direction == "incoming" else OUTGOING_PATH)
    current = ranks.get(m.state, 0)
    if "not_sent" in m.milestones:
        path.insert(path.index("sent") + 1, "not_sent")
    if "deleted" in m.milestones or m.state == "deleted":
        path.append("deleted")
    missed = m.missed_acks
    out: list[Step] = []
    previous: dt.datetime | None = None
    for status in path:
        milestone = m.milestones.get(status)
        due_at, late, overdue = None, False, False
        if status == "sent":
            due_at, late = missed.sent_due_at, missed.missed_sent
            overdue = missed.overdue_for == "sent"
        elif status == "delivered":
            due_at, late = missed.delivered_due_at, missed.missed_delivered
            overdue = missed.overdue_for == "delivered"
        if milestone is not None:
            latency = (milestone.at - previous).total_seconds() if previous else None
            previous = milestone.at if previous is None else max(previous, milestone.at)
            detail = None
            if status == "not_sent":
                detail = "; ".join(
                    ": ".join(p for p in (f.code, f.text) if p) or f.raw for f in m.failures
                )
            out.append(
                Step(
                    status=status,
                    reached="reported",
                    at=milestone.at,
                    provider_time=milestone.provider_time,
                    position=milestone.position,
                    latency=latency,
                    due_at=due_at,
                    missed=late,
                    failure=status == "not_sent",
                    detail=detail,
                )
            )
        elif status != "not_sent" and ranks.get(status, 99) <= current and status != "deleted":
            out.append(Step(status=status, reached="implied", due_at=due_at, missed=late))
        else:
            out.append(Step(status=status, reached="pending", due_at=due_at, overdue=overdue))
    return out


def entries(m: MessageDetail) -> list[Entry]:
    ranks = _ranks(m.direction)
    best = -1
    out: list[Entry] = []
    for t in m.timeline:
        rank = ranks.get(t.status, -1)
        duplicate = t.duplicate_of is not None
        late = not duplicate and t.fact == "status" and rank < best
        if not duplicate:
            best = max(best, rank)
        failure = t.status == "not_sent" or t.error_code is not None
        out.append(Entry(item=t, duplicate=duplicate, out_of_order=late, failure=failure))
    return out


def _ago(seconds: float) -> str:
    if abs(seconds) < 1:
        return f"{seconds * 1000:.0f} ms"
    if abs(seconds) < 120:
        return f"{seconds:.1f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def why(m: MessageDetail, pictured: list[Step], marked: list[Entry]) -> list[str]:
    """The reasons, in words, that the message is in its state."""
    lines: list[str] = []
    setter = m.milestones.get(m.state)
    if setter is not None:
        lines.append(
            f"It is {m.state} because event #{setter.position} reported {m.state}"
            f" (first at {setter.at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC), and no event"
            " reported a later step."
        )
    implied = [s.status for s in pictured if s.reached == "implied"]
    if implied:
        lines.append(
            f"{', '.join(implied)} never came as such: {m.state} implies"
            f" {'it' if len(implied) == 1 else 'them'} (the state is the highest step reported)."
        )
    if m.failures and m.state != "not_sent":
        lines.append(
            f"A failure is on record ({', '.join(f.code or f.raw for f in m.failures)}) but a"
            f" later step ({m.state}) outranks it; the failure is kept."
        )
    elif m.failures:
        codes = ", ".join(": ".join(p for p in (f.code, f.text) if p) or f.raw for f in m.failures)
        lines.append(f"The provider reported the failure: {codes}.")
    disorder = [e for e in marked if e.out_of_order]
    if disorder:
        lines.append(
            f"{len(disorder)} report(s) arrived after a later step and changed nothing"
            f" (out of order): {', '.join(f'#{e.item.position} {e.item.status}' for e in disorder)}."
        )
    dups = [e for e in marked if e.duplicate]
    if dups:
        lines.append(
            f"{len(dups)} webhook(s) were retries stored as duplicates:"
            f" {', '.join(f'#{e.item.position} of #{e.item.duplicate_of}' for e in dups)}."
        )
    missed = m.missed_acks
    for stage, due, by, was_missed in (
        ("sent", missed.sent_due_at, missed.sent_by, missed.missed_sent),
        ("delivered", missed.delivered_due_at, missed.delivered_by, missed.missed_delivered),
    ):
        if due is None:
            continue
        if by is not None and was_missed:
            lines.append(
                f"The {stage} deadline ({due.astimezone(dt.UTC):%H:%M:%S} UTC) was missed:"
                f" {stage} came {_ago((by - due).total_seconds())} late."
            )
        elif by is None and missed.overdue_for == stage:
            lines.append(
                f"It is overdue: still waiting for {stage}, due at"
                f" {due.astimezone(dt.UTC):%H:%M:%S} UTC."
            )
        elif by is None and was_missed:
            lines.append(
                f"The {stage} deadline ({due.astimezone(dt.UTC):%H:%M:%S} UTC) was missed."
            )
    if m.timeline_truncated:
        lines.append("The timeline is cut at its bound; later entries are not shown.")
    return lines


def picture(m: MessageDetail) -> Picture:
    pictured = steps(m)
    marked = entries(m)
    return Picture(steps=pictured, entries=marked, why=why(m, pictured, marked))
