"""The per-message state machine (invariant 5), as a commutative merge.

Every report only ever *adds* to a message: a milestone keeps the earliest time seen for
its status, failures form a set, observations fill fields. The state is then derived: the
highest rank among what was reported. Because each step is a min, a max or a union, any
order and any number of repeats of the same reports fold to the same message.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, get_args

import msgspec

from projections.facts import RANK, FailureClass, Origin, origin_of

INCOMING_STATES = {"received": 0, "deleted": 50}


class Milestone(msgspec.Struct, frozen=True, kw_only=True):
    """When a status was first reported: our clock (``at``) and the provider's (``pt``)."""

    at: dt.datetime
    position: int
    pt: float | None = None


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    raw: str
    code: str | None = None
    text: str | None = None
    at: dt.datetime
    position: int
    pt: float | None = None
    #: what the failure means, the same for every provider (``projections.failures``)
    failure_class: FailureClass = "unknown"

    def identity(self) -> tuple[str, str, str]:
        return (self.raw, self.code or "", self.text or "")


class AckSpan(msgspec.Struct, frozen=True, array_like=True):
    """The log positions of the first and the last event that reported one ack status."""

    first: int
    last: int

    def merged(self, position: int) -> AckSpan:
        return AckSpan(min(self.first, position), max(self.last, position))


#: Per-message anomalies (``MessageState.anomalies``), in the order they are listed.
Anomaly = Literal[
    "read_without_delivered",
    "ack_after_failure",
    "ack_for_unseen",
    "downgrade_suppressed",
    "ack_retried",
]
ANOMALIES: tuple[Anomaly, ...] = get_args(Anomaly)
#: statuses that say the recipient's phone got the message
_ARRIVED = ("delivered", "read", "played")


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """One status (or observation, or deletion) reported about a message by one event."""

    status: str
    at: dt.datetime
    position: int
    pt: float | None = None
    raw: str = ""
    error_code: str | None = None
    error_text: str | None = None
    failure_class: FailureClass = "unknown"


def _earlier(old: Milestone | None, new: Milestone) -> Milestone:
    """The earliest by our clock; ties by log position, so the merge is order-free."""
    if old is None:
        return new
    pt = min((p for p in (old.pt, new.pt) if p is not None), default=None)
    first = new if (new.at, new.position) < (old.at, old.position) else old
    return Milestone(at=first.at, position=first.position, pt=pt)


class MessageState(msgspec.Struct, kw_only=True):
    """Mutable while folding one batch; persisted as one row of ``messages``."""

    channel: str
    key: str
    provider: str
    observed_in: bool = False
    observed_out: bool = False
    milestones: dict[str, Milestone] = {}
    failures: list[Failure] = []
    #: ack status → positions of the first and last event reporting it (the message's own
    #: acks, not a group member's): what ``anomalies`` needs beyond the milestones
    acks: dict[str, AckSpan] = {}
    chat: str | None = None
    sender: str | None = None
    kind: str | None = None
    text: str | None = None
    media: str | None = None
    quoted: str | None = None
    derived_key: bool = False
    first_position: int = 0
    last_position: int = 0
    first_seen_at: dt.datetime | None = None
    last_seen_at: dt.datetime | None = None
    #: group receipts: participants with a receipt, and how many of them have each one
    #: (a read implies delivered, a play implies read); the fold keeps them (``fold.py``)
    participants: int = 0
    delivered_to: int = 0
    read_by: int = 0
    played_by: int = 0

    # -- derived -----------------------------------------------------------------------
    @property
    def direction(self) -> str:
        """Observed direction; an ack for a message never observed makes it outgoing."""
        if self.observed_in and not self.observed_out:
            return "incoming"
        return "outgoing"

    @property
    def state(self) -> str:
        if self.observed_in and not self.observed_out:  # self.direction == "incoming"
            ranks, best, best_rank = INCOMING_STATES, "received", 0
        else:
            ranks, best, best_rank = RANK, "sending", 0
        for status in self.milestones:
            rank = ranks.get(status)
            if rank is not None and rank > best_rank:
                best, best_rank = status, rank
        return best

    @property
    def rank(self) -> int:
        ranks = INCOMING_STATES if self.direction == "incoming" else RANK
        return ranks[self.state]

    @property
    def origin(self) -> Origin | None:
        """Incoming: ``customer`` or ``system`` (``facts.origin_of``); outgoing: None."""
        return origin_of(self.direction, self.kind)

    @property
    def failure_class(self) -> FailureClass | None:
        """The class of the message's first failure (by our clock), None without one."""
        return self.failures[0].failure_class if self.failures else None

    @property
    def state_at(self) -> dt.datetime | None:
        """When the current state was first reached (our clock): deadlines start here."""
        milestone = self.milestones.get(self.state)
        if milestone is not None:
            return milestone.at
        return self.first_seen_at

    @property
    def anomalies(self) -> list[Anomaly]:
        """What no provider says directly, as a pure function of what was reported.

        Each is a function of sets (milestones, failures) and of min/max log positions
        (``acks``), so it is as order-free and idempotent as the state itself:

        - ``read_without_delivered``: read or played reported, delivered never;
        - ``ack_after_failure``: delivered, read or played reported as well as a failure
          (in either order: both stay on record, and providers send out of order);
        - ``ack_for_unseen``: acks (a group member's too) for a message never seen sent
          (nor received);
        - ``downgrade_suppressed``: an ack arrived (log position) after a higher-ranked
          one had, so the state did not go back to it;
        - ``ack_retried``: the same ack status was reported by two or more events.
        """
        out: list[Anomaly] = []
        if self.direction != "outgoing":
            return out
        m = self.milestones
        if ("read" in m or "played" in m) and "delivered" not in m:
            out.append("read_without_delivered")
        if self.failures and any(s in m for s in _ARRIVED):
            out.append("ack_after_failure")
        if not self.observed_out and not self.observed_in and any(s != "deleted" for s in m):
            out.append("ack_for_unseen")
        spans = [(RANK.get(s, 0), span) for s, span in self.acks.items()]
        if any(lo < hi and low.last > high.first for lo, low in spans for hi, high in spans):
            out.append("downgrade_suppressed")
        if any(span.first != span.last for span in self.acks.values()):
            out.append("ack_retried")
        return out

    def count_receipt(self, before: str | None, after: str) -> None:
        """One participant's receipt went from ``before`` (None: it had none) to ``after``.

        Each count goes up only when a participant first crosses its rank, so whatever the
        order and the repeats, each is the number of distinct participants at that rank.
        """
        was = RANK.get(before, -1) if before is not None else -1
        now = RANK.get(after, -1)
        if before is None:
            self.participants += 1
        if was < RANK["delivered"] <= now:
            self.delivered_to += 1
        if was < RANK["read"] <= now:
            self.read_by += 1
        if was < RANK["played"] <= now:
            self.played_by += 1

    # -- folding -----------------------------------------------------------------------
    def touch(self, at: dt.datetime, position: int) -> None:
        if self.first_seen_at is None or (at, position) < (self.first_seen_at, self.first_position):
            self.first_seen_at, self.first_position = at, position
        if self.last_seen_at is None or (at, position) > (self.last_seen_at, self.last_position):
            self.last_seen_at, self.last_position = at, position

    def observe(
        self,
        *,
        direction: str,
        at: dt.datetime,
        position: int,
        pt: float | None,
        chat: str | None = None,
        sender: str | None = None,
        kind: str | None = None,
        text: str | None = None,
        media: str | None = None,
        quoted: str | None = None,
        derived_key: bool = False,
    ) -> bool:
        """A sighting of the message itself; returns whether it advanced the state."""
        before = self.state  # the rank follows the state (only "deleted" is in both machines)
        self.touch(at, position)
        if direction == "incoming":
            self.observed_in = True
            self._milestone("received", Milestone(at=at, position=position, pt=pt))
        else:
            self.observed_out = True
            self._milestone("sending", Milestone(at=at, position=position, pt=pt))
        # Content fields: the first value in log order wins. The projector always folds in
        # log order, so replays agree; unlike statuses, content is not re-reported out of order.
        for name, value in (
            ("chat", chat),
            ("sender", sender),
            ("kind", kind),
            ("text", text),
            ("media", media),
            ("quoted", quoted),
        ):
            if value is not None and getattr(self, name) is None:
                setattr(self, name, value)
        self.derived_key = self.derived_key or derived_key
        return self.state != before

    def note_chat(self, chat: str | None) -> None:
        """The chat an ack names, for a message no sighting has given one: like the content
        fields, the first value in log order wins."""
        if chat is not None and self.chat is None:
            self.chat = chat

    def report(self, r: Report, *, own_ack: bool = True) -> bool:
        """An ack, failure or deletion; returns whether it advanced the state.

        ``own_ack=False`` for a group member's receipt: it moves the state (the furthest any
        participant got) but is not one of the message's own acks (see ``anomalies``).
        """
        before = self.state
        self.touch(r.at, r.position)
        if own_ack and r.status != "deleted":
            span = self.acks.get(r.status)
            merged = AckSpan(r.position, r.position) if span is None else span.merged(r.position)
            if merged != span:
                self.acks = {**self.acks, r.status: merged}
        self._milestone(r.status, Milestone(at=r.at, position=r.position, pt=r.pt))
        if r.status == "not_sent":
            self._failure(
                Failure(
                    raw=r.raw,
                    code=r.error_code,
                    text=r.error_text,
                    at=r.at,
                    position=r.position,
                    pt=r.pt,
                    failure_class=r.failure_class,
                )
            )
        return self.state != before

    def _milestone(self, status: str, new: Milestone) -> None:
        self.milestones = {**self.milestones, status: _earlier(self.milestones.get(status), new)}

    def _failure(self, new: Failure) -> None:
        merged: dict[tuple[str, str, str], Failure] = {f.identity(): f for f in self.failures}
        old = merged.get(new.identity())
        if old is None or (new.at, new.position) < (old.at, old.position):
            pt = min((p for p in (new.pt, old.pt if old else None) if p is not None), default=None)
            merged[new.identity()] = msgspec.structs.replace(new, pt=pt)
        elif new.pt is not None and (old.pt is None or new.pt < old.pt):
            merged[new.identity()] = msgspec.structs.replace(old, pt=new.pt)
        self.failures = sorted(merged.values(), key=lambda f: (f.at, f.position, f.identity()))
