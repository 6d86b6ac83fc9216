"""The per-message state machine (invariant 5), as a commutative merge.

Every report only ever *adds* to a message: a milestone keeps the earliest time seen for
its status, failures form a set, observations fill fields. The state is then derived: the
highest rank among what was reported. Because each step is a min, a max or a union, any
order and any number of repeats of the same reports fold to the same message.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from projections.facts import RANK

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

    def identity(self) -> tuple[str, str, str]:
        return (self.raw, self.code or "", self.text or "")


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """One status (or observation, or deletion) reported about a message by one event."""

    status: str
    at: dt.datetime
    position: int
    pt: float | None = None
    raw: str = ""
    error_code: str | None = None
    error_text: str | None = None


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

    # -- derived -----------------------------------------------------------------------
    @property
    def direction(self) -> str:
        """Observed direction; an ack for a message never observed makes it outgoing."""
        if self.observed_in and not self.observed_out:
            return "incoming"
        return "outgoing"

    @property
    def state(self) -> str:
        ranks = INCOMING_STATES if self.direction == "incoming" else RANK
        best, best_rank = ("received", 0) if self.direction == "incoming" else ("sending", 0)
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
    def state_at(self) -> dt.datetime | None:
        """When the current state was first reached (our clock): deadlines start here."""
        milestone = self.milestones.get(self.state)
        if milestone is not None:
            return milestone.at
        return self.first_seen_at

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
        before = self.rank, self.state
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
        return (self.rank, self.state) != before

    def report(self, r: Report) -> bool:
        """An ack, failure or deletion; returns whether it advanced the state."""
        before = self.rank, self.state
        self.touch(r.at, r.position)
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
                )
            )
        return (self.rank, self.state) != before

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
