"""Canonical events from decoded log events (pure: no I/O, no clock).

The feed does not have a state machine of its own: each log event is folded with the
projector's :func:`projections.fold.fold` (and so with ``message_state``'s merge) onto the
feed's copy of the messages it touches, one log event at a time, and the difference between
before and after is the feed event. A message whose state changes twice in one batch gives
two events, in log order. Ids come from (type, log position, index), so a replay yields the
same ids.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping

import msgspec

from projections import fold
from projections.feed import events as fe
from projections.rules.deadlines import WAITS, Deadlines, MissedAcks, Stage
from projections.rules.message_state import MessageState

Key = tuple[str, str]


class Instance(msgspec.Struct, frozen=True):
    status: str
    raw: str
    position: int


class Derived(msgspec.Struct, kw_only=True):
    """What one batch derives: the events, and the feed's rows it changed."""

    events: list[fe.FeedEvent]
    messages: dict[Key, MessageState]
    missed: dict[Key, MissedAcks]
    instances: dict[str, Instance]


def state_changed(
    event_id: str,
    at: dt.datetime,
    positions: list[int],
    previous: str | None,
    state: MessageState,
) -> fe.MessageStateChanged:
    return fe.MessageStateChanged(
        id=event_id,
        timestamp=at,
        channel=state.channel,
        provider=state.provider,
        positions=positions,
        key=state.key,
        direction="incoming" if state.direction == "incoming" else "outgoing",
        previous_state=previous,
        state=state.state,
        milestones={
            s: fe.Milestone(at=m.at, position=m.position) for s, m in state.milestones.items()
        },
        failures=[
            fe.Failure(
                raw=f.raw,
                code=f.code,
                text=f.text,
                failure_class=f.failure_class,
                at=f.at,
                position=f.position,
            )
            for f in state.failures
        ],
    )


def ack_missed(
    state: MessageState, stage: Stage, due_at: dt.datetime, at: dt.datetime, *, late: bool
) -> fe.AckMissed:
    """A message misses each stage at most once, so (message, stage) is its stable id."""
    waited = state.milestones.get(WAITS[stage].state)
    return fe.AckMissed(
        id=fe.event_id("message.ack_missed", state.channel, state.key, stage),
        timestamp=at,
        channel=state.channel,
        provider=state.provider,
        positions=[waited.position] if waited else [state.last_position],
        key=state.key,
        stage=stage,
        due_at=due_at,
        state=state.state,
        late_ack=late,
    )


def newly_missed(before: MissedAcks, after: MissedAcks) -> list[tuple[Stage, dt.datetime]]:
    out: list[tuple[Stage, dt.datetime]] = []
    if after.missed_sent and not before.missed_sent and after.sent_due_at is not None:
        out.append(("sent", after.sent_due_at))
    if (
        after.missed_delivered
        and not before.missed_delivered
        and after.delivered_due_at is not None
    ):
        out.append(("delivered", after.delivered_due_at))
    return out


def derive(
    decoded: list[fold.Decoded],
    messages: Mapping[Key, MessageState],
    missed: Mapping[Key, MissedAcks],
    instances: Mapping[str, Instance],
    deadlines: Mapping[str, Deadlines],
) -> Derived:
    out = Derived(events=[], messages={}, missed={}, instances={})
    current = dict(messages)
    current_missed = dict(missed)
    current_instances = dict(instances)
    for d in decoded:
        if d.error is not None:
            continue  # quarantined: no canonical event
        ev = d.event
        batch = fold.fold([d], current, current_missed, {}, deadlines)
        index = itertools.count(1)  # the event's index among those of this log position
        for k, state in batch.messages.items():
            old = current.get(k)
            previous = old.state if old is not None else None
            if state.state != previous:
                out.events.append(
                    state_changed(
                        fe.event_id("message.state_changed", ev.position, next(index)),
                        ev.received_at,
                        [ev.position],
                        previous,
                        state,
                    )
                )
            seen = set(old.anomalies) if old is not None else set()
            for anomaly in state.anomalies:
                if anomaly not in seen:
                    out.events.append(
                        fe.MessageAnomaly(
                            id=fe.event_id("message.anomaly", ev.position, next(index)),
                            timestamp=ev.received_at,
                            channel=state.channel,
                            provider=state.provider,
                            positions=[ev.position],
                            key=state.key,
                            anomaly=anomaly,
                            anomalies=list(state.anomalies),
                            state=state.state,
                        )
                    )
            before = current_missed.get(k, MissedAcks())
            after = batch.missed[k]
            for stage, due in newly_missed(before, after):
                out.events.append(ack_missed(state, stage, due, ev.received_at, late=True))
            current[k] = out.messages[k] = state
            current_missed[k] = out.missed[k] = after
        for row in batch.instances:
            prev = current_instances.get(row.channel)
            if prev is None or prev.status != row.status:
                out.events.append(
                    fe.InstanceStatusChanged(
                        id=fe.event_id("instance.status_changed", ev.position, next(index)),
                        timestamp=ev.received_at,
                        channel=row.channel,
                        provider=row.provider,
                        positions=[row.position],
                        previous_status=prev.status if prev else None,
                        status=row.status,
                        raw=row.raw,
                        reason=row.reason,
                    )
                )
            current_instances[row.channel] = out.instances[row.channel] = Instance(
                row.status, row.raw, row.position
            )
    return out
