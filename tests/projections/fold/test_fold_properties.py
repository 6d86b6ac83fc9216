"""Invariant 5, for any multiset of reports in any order with any repeats."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.rules.message_state import MessageState, Report

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
#: docs/design.md invariant 5, copied by hand (never read from ``projections.facts.RANK``):
#: sending 0 < sent 10 < not_sent 15 < delivered 20 < read 30 < played 40 < deleted 50
DESIGN_RANK = {
    "sending": 0,
    "sent": 10,
    "not_sent": 15,
    "delivered": 20,
    "read": 30,
    "played": 40,
    "deleted": 50,
}
STATUSES = ["sent", "not_sent", "delivered", "read", "played", "deleted"]

reports = st.builds(
    lambda status, sec, pos, pt, code: Report(
        status=status,
        at=T0 + dt.timedelta(seconds=sec),
        position=pos,
        pt=pt,
        raw=status,
        error_code=code if status == "not_sent" else None,
        error_text="boom" if status == "not_sent" and code else None,
    ),
    st.sampled_from(STATUSES),
    st.integers(0, 50),
    st.integers(1, 1000),
    st.none() | st.floats(0, 2e9, allow_nan=False),
    st.none() | st.sampled_from(["131014", "63018", "SWE004"]),
)
# an observation: ("obs", direction, seconds, position)
observations = st.tuples(
    st.just("obs"),
    st.sampled_from(["outgoing", "incoming"]),
    st.integers(0, 50),
    st.integers(1, 1000),
)
items = st.lists(reports | observations, min_size=1, max_size=12)


def fold(seq: list[Any]) -> MessageState:
    m = MessageState(channel="c", key="k", provider="p")
    for item in seq:
        if isinstance(item, Report):
            m.report(item)
        else:
            _, direction, sec, pos = item
            m.observe(direction=direction, at=T0 + dt.timedelta(seconds=sec), position=pos, pt=None)
    return m


def summary(m: MessageState) -> tuple[Any, ...]:
    return (
        m.direction,
        m.state,
        m.rank,
        m.state_at,
        m.milestones,
        m.failures,
        m.first_seen_at,
        m.last_seen_at,
        m.acks,
        m.anomalies,
    )


@settings(max_examples=400)
@given(items=items, data=st.data())
def test_any_order_and_any_duplicates_fold_alike(items: list[Any], data: st.DataObject) -> None:
    reference = summary(fold(items))
    shuffled = data.draw(st.permutations(items))
    repeats = data.draw(st.lists(st.sampled_from(items), max_size=8))
    mixed = data.draw(st.permutations(shuffled + repeats))
    assert summary(fold(shuffled)) == reference
    assert summary(fold(mixed)) == reference


@settings(max_examples=300)
@given(items=items)
def test_rank_rules(items: list[Any]) -> None:
    m = fold(items)
    reported = [i for i in items if isinstance(i, Report)]
    if m.direction == "incoming":
        assert m.state == (
            "deleted" if any(r.status == "deleted" for r in reported) else "received"
        )
        return
    best = max((DESIGN_RANK[r.status] for r in reported), default=0)
    assert m.rank == best, "the state is the highest rank reported"
    # every failure stays on record, whatever came after it
    failures = {
        (r.raw, r.error_code or "", r.error_text or "") for r in reported if r.status == "not_sent"
    }
    assert {f.identity() for f in m.failures} == failures
    # milestones: only statuses actually reported, each at its earliest time
    for r in reported:
        milestone = m.milestones[r.status]
        earliest = min(x.at for x in reported if x.status == r.status)
        assert milestone.at == earliest


def test_late_sent_never_hides_a_failure_or_a_read() -> None:
    fail = Report(status="not_sent", at=T0, position=2, raw="failed", error_code="63018")
    sent = Report(status="sent", at=T0 + dt.timedelta(seconds=5), position=3, raw="sent")
    m = fold([fail, sent])
    assert m.state == "not_sent" and len(m.failures) == 1
    read = Report(status="read", at=T0, position=4, raw="read")
    m = fold([read, sent])
    assert m.state == "read"
    assert "sent" in m.milestones and "delivered" not in m.milestones  # only what was reported


def test_delivered_after_failure_shows_delivered_and_keeps_the_failure() -> None:
    fail = Report(status="not_sent", at=T0, position=2, raw="failed", error_code="1")
    delivered = Report(status="delivered", at=T0 + dt.timedelta(seconds=1), position=3, raw="d")
    m = fold([fail, delivered])
    assert m.state == "delivered"
    assert [f.code for f in m.failures] == ["1"]


def test_an_ack_for_an_unseen_message_makes_it_outgoing() -> None:
    m = fold([Report(status="delivered", at=T0, position=1, raw="delivered")])
    assert (m.direction, m.state) == ("outgoing", "delivered")


PAIRS = [
    (low, high)
    for low in DESIGN_RANK
    for high in DESIGN_RANK
    if DESIGN_RANK[low] < DESIGN_RANK[high]
]


@pytest.mark.parametrize(("low", "high"), PAIRS)
def test_the_higher_rank_wins_in_either_order(low: str, high: str) -> None:
    a = Report(status=low, at=T0, position=1, raw=low)
    b = Report(status=high, at=T0 + dt.timedelta(seconds=1), position=2, raw=high)
    for seq in ([a, b], [b, a]):
        m = fold(seq)
        assert (m.state, m.rank) == (high, DESIGN_RANK[high]), (low, high, seq)


@pytest.mark.parametrize("status", list(DESIGN_RANK))
def test_each_status_alone_has_its_design_rank(status: str) -> None:
    m = fold([Report(status=status, at=T0, position=1, raw=status)])
    assert (m.state, m.rank) == (status, DESIGN_RANK[status])


# -- anomalies: each a pure function of what was reported -------------------------------


def _r(status: str, pos: int, code: str | None = None) -> Report:
    return Report(
        status=status, at=T0 + dt.timedelta(seconds=pos), position=pos, raw=status, error_code=code
    )


def _seen(m: MessageState) -> MessageState:
    m.observe(direction="outgoing", at=T0, position=1, pt=None)
    return m


@pytest.mark.parametrize(
    ("reports", "observed", "expected"),
    [
        ([_r("sent", 2), _r("delivered", 3), _r("read", 4)], True, []),
        ([_r("sent", 2), _r("read", 4)], True, ["read_without_delivered"]),
        ([_r("played", 4)], True, ["read_without_delivered"]),
        ([_r("not_sent", 2, "131026"), _r("delivered", 3)], True, ["ack_after_failure"]),
        (
            [_r("read", 2), _r("delivered", 3), _r("not_sent", 4, "1")],
            True,
            ["ack_after_failure", "downgrade_suppressed"],
        ),
        ([_r("delivered", 3)], False, ["ack_for_unseen"]),
        ([_r("delivered", 3), _r("sent", 4)], True, ["downgrade_suppressed"]),
        ([_r("sent", 3), _r("delivered", 3)], True, []),  # one event: no order between them
        ([_r("sent", 2), _r("sent", 5)], True, ["ack_retried"]),
        ([_r("sent", 2), _r("sent", 2)], True, []),  # the same event folded twice: a replay
    ],
)
def test_each_anomaly_as_defined(
    reports: list[Report], observed: bool, expected: list[str]
) -> None:
    m = MessageState(channel="c", key="k", provider="p")
    if observed:
        _seen(m)
    for r in reports:
        m.report(r)
    assert m.anomalies == expected


def test_a_late_delivered_or_a_late_sighting_clears_an_anomaly() -> None:
    m = fold([_r("read", 4)])
    assert m.anomalies == ["read_without_delivered", "ack_for_unseen"]
    m.report(_r("delivered", 3))
    assert m.anomalies == ["ack_for_unseen"]
    _seen(m)
    assert m.anomalies == []


def test_group_receipts_are_not_the_messages_own_acks() -> None:
    """One member's read and another's later delivered is a group, not a downgrade."""
    m = _seen(MessageState(channel="c", key="k", provider="p"))
    m.report(_r("read", 2), own_ack=False)
    m.report(_r("delivered", 3), own_ack=False)
    m.report(_r("delivered", 4), own_ack=False)
    assert m.state == "read" and m.acks == {} and m.anomalies == []


def test_incoming_messages_have_no_ack_anomalies() -> None:
    m = fold([("obs", "incoming", 0, 1), _r("deleted", 2)])
    assert m.direction == "incoming" and m.anomalies == []


@settings(max_examples=300)
@given(items=items)
def test_anomalies_follow_their_definitions(items: list[Any]) -> None:
    """The definitions restated over the raw reports, never over the fold's own fields."""
    m = fold(items)
    if m.direction != "outgoing":
        assert m.anomalies == []
        return
    acks = [r for r in items if isinstance(r, Report) and r.status != "deleted"]
    statuses = {r.status for r in acks}
    observed = any(not isinstance(i, Report) for i in items)
    want = {
        "read_without_delivered": bool({"read", "played"} & statuses)
        and "delivered" not in statuses,
        "ack_after_failure": "not_sent" in statuses
        and bool({"delivered", "read", "played"} & statuses),
        "ack_for_unseen": not observed and bool(acks),
        "downgrade_suppressed": any(
            DESIGN_RANK[a.status] < DESIGN_RANK[b.status] and a.position > b.position
            for a in acks
            for b in acks
        ),
        "ack_retried": any(
            a.status == b.status and a.position != b.position for a in acks for b in acks
        ),
    }
    assert set(m.anomalies) == {k for k, v in want.items() if v}
