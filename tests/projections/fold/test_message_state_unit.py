"""``MessageState.observe`` and friends, rule by rule (docs/design.md invariant 5), fast enough to
kill mutants: content fields, milestones with both clocks, directions, the return value."""

from __future__ import annotations

import datetime as dt

from projections.rules.message_state import MessageState, Milestone, Report

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def new() -> MessageState:
    return MessageState(channel="c", key="k", provider="p")


def test_observing_an_incoming_message() -> None:
    m = new()
    assert m.observe(direction="incoming", at=at(5), position=7, pt=123.0) is True
    assert (m.direction, m.state, m.rank) == ("incoming", "received", 0)
    assert m.observed_in and not m.observed_out
    assert m.milestones == {"received": Milestone(at=at(5), position=7, pt=123.0)}
    assert (m.first_seen_at, m.first_position, m.last_seen_at, m.last_position) == (
        at(5),
        7,
        at(5),
        7,
    )
    assert m.state_at == at(5)
    # seen again later: nothing advances, the first sighting stays
    assert m.observe(direction="incoming", at=at(9), position=9, pt=99.0) is False
    assert m.milestones["received"] == Milestone(at=at(5), position=7, pt=99.0)
    assert (m.last_seen_at, m.last_position) == (at(9), 9)


def test_observing_an_outgoing_message() -> None:
    m = new()
    assert m.observe(direction="outgoing", at=at(3), position=2, pt=None) is False
    assert (m.direction, m.state, m.rank) == ("outgoing", "sending", 0)
    assert m.observed_out and not m.observed_in
    assert m.milestones == {"sending": Milestone(at=at(3), position=2, pt=None)}
    m.report(Report(status="sent", at=at(4), position=3, raw="sent"))
    assert m.observe(direction="outgoing", at=at(1), position=1, pt=7.5) is False
    assert m.milestones["sending"] == Milestone(at=at(1), position=1, pt=7.5)
    assert (m.first_seen_at, m.first_position) == (at(1), 1)


def test_both_directions_observed_is_outgoing() -> None:
    m = new()
    m.observe(direction="incoming", at=at(1), position=1, pt=None)
    m.observe(direction="outgoing", at=at(2), position=2, pt=None)
    assert m.direction == "outgoing" and m.observed_in and m.observed_out


def test_content_fields_first_value_in_log_order_wins() -> None:
    m = new()
    fields = ("chat", "sender", "kind", "text", "media", "quoted")
    m.observe(direction="incoming", at=at(1), position=1, pt=None, chat="c1", kind="text")
    first = {name: f"{name}-1" for name in fields}
    m.observe(direction="incoming", at=at(2), position=2, pt=None, **first)
    assert (m.chat, m.kind) == ("c1", "text")
    assert (m.sender, m.text, m.media, m.quoted) == ("sender-1", "text-1", "media-1", "quoted-1")
    m.observe(direction="incoming", at=at(3), position=3, pt=None, **{n: f"{n}-2" for n in fields})
    m.observe(direction="incoming", at=at(4), position=4, pt=None)  # None never erases
    assert [getattr(m, n) for n in fields] == [
        "c1",
        "sender-1",
        "text",
        "text-1",
        "media-1",
        "quoted-1",
    ]


def test_a_derived_key_stays_derived() -> None:
    m = new()
    m.observe(direction="incoming", at=at(1), position=1, pt=None)
    assert m.derived_key is False
    m.observe(direction="incoming", at=at(2), position=2, pt=None, derived_key=True)
    assert m.derived_key is True
    m.observe(direction="incoming", at=at(3), position=3, pt=None, derived_key=False)
    assert m.derived_key is True


def test_report_returns_whether_the_state_advanced() -> None:
    m = new()
    assert m.report(Report(status="read", at=at(2), position=2, raw="read")) is True
    assert m.report(Report(status="delivered", at=at(1), position=1, raw="d")) is False
    assert m.state == "read" and m.state_at == at(2)
    assert m.milestones["delivered"] == Milestone(at=at(1), position=1)
    assert (m.first_seen_at, m.last_seen_at) == (at(1), at(2))


def test_failures_keep_the_earliest_sighting_and_the_earliest_provider_time() -> None:
    m = new()
    late = Report(status="not_sent", at=at(5), position=5, raw="failed", error_code="1", pt=50.0)
    early = Report(status="not_sent", at=at(1), position=1, raw="failed", error_code="1", pt=None)
    m.report(late)
    m.report(early)
    assert len(m.failures) == 1
    f = m.failures[0]
    assert (f.at, f.position, f.pt) == (at(1), 1, 50.0)
    # a later copy with an earlier provider time lends only its provider time
    m.report(Report(status="not_sent", at=at(9), position=9, raw="failed", error_code="1", pt=7.0))
    f = m.failures[0]
    assert (f.at, f.position, f.pt) == (at(1), 1, 7.0)
    other = Report(status="not_sent", at=at(0), position=0, raw="failed", error_code="2")
    m.report(other)
    assert [x.code for x in m.failures] == ["2", "1"]  # ordered by time, then position


def test_a_status_milestone_keeps_the_providers_time() -> None:
    m = new()
    m.report(Report(status="read", at=at(3), position=3, raw="read", pt=42.0))
    assert m.milestones["read"] == Milestone(at=at(3), position=3, pt=42.0)


def test_a_later_failure_copy_without_provider_time_changes_nothing() -> None:
    m = new()
    first = Report(status="not_sent", at=at(1), position=1, raw="failed", error_code="1", pt=5.0)
    m.report(first)
    m.report(Report(status="not_sent", at=at(2), position=2, raw="failed", error_code="1"))
    assert [(f.at, f.position, f.pt) for f in m.failures] == [(at(1), 1, 5.0)]
