"""The message picture for any order of acks: what it draws follows from what was reported.

The message is built as the API answers it (milestones = first report of each status, the
state = highest rank reported, duplicates pointing at their first copy); the picture's
steps, marks, reasons and latencies are checked against those reports, for any order.
The browser and HTTP tests check the same page on messages folded by the real projector.
"""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.facts import RANK
from service.console import picture
from service.reads.models import Content, MessageDetail, MilestoneOut, MissedAcksOut, TimelineEntry

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ACKS = ("sent", "delivered", "read", "played")


def detail(reports: list[tuple[str, bool]]) -> MessageDetail:
    """A message sent at T0, then ``reports`` (status, is a retried duplicate) 1 s apart."""
    timeline = [
        TimelineEntry(
            position=1,
            seq=0,
            received_at=T0,
            provider_time=None,
            fact="message",
            status="sending",
            raw="out",
            participant=None,
            error_code=None,
            error_text=None,
            advanced=False,
            duplicate_of=None,
            event="/v1/events/1",
        )
    ]
    milestones = {"sending": MilestoneOut(at=T0, position=1, provider_time=None, event="")}
    best = "sending"
    first_of: dict[str, int] = {}
    for i, (status, dup) in enumerate(reports, start=2):
        at = T0 + dt.timedelta(seconds=i)
        original = first_of.get(status) if dup else None
        advanced = original is None and RANK[status] > RANK[best]
        timeline.append(
            TimelineEntry(
                position=i,
                seq=0,
                received_at=at,
                provider_time=None,
                fact="status",
                status=status,
                raw=status,
                participant=None,
                error_code=None,
                error_text=None,
                advanced=advanced,
                duplicate_of=original,
                event=f"/v1/events/{i}",
            )
        )
        first_of.setdefault(status, i)
        if status not in milestones:
            milestones[status] = MilestoneOut(at=at, position=i, provider_time=None, event="")
        if advanced:
            best = status
    return MessageDetail(
        channel="c",
        message_id="m",
        provider="waha",
        direction="outgoing",
        state=best,
        state_at=milestones[best].at,
        milestones=milestones,
        failures=[],
        content=Content(
            chat=None,
            sender=None,
            kind="text",
            text=None,
            media=None,
            quoted=None,
            derived_key=False,
        ),
        missed_acks=MissedAcksOut(
            sent_due_at=None,
            sent_by=None,
            missed_sent=False,
            delivered_due_at=None,
            delivered_by=None,
            missed_delivered=False,
            overdue=False,
            overdue_for=None,
        ),
        failure_class=None,
        receipt_counts=None,
        origin=None,
        anomalies=[],
        first_position=1,
        last_position=len(timeline),
        first_seen_at=T0,
        last_seen_at=timeline[-1].received_at,
        receipts=[],
        timeline=timeline,
        timeline_truncated=False,
    )


reports = st.lists(st.tuples(st.sampled_from(ACKS), st.booleans()), min_size=0, max_size=8)


@settings(max_examples=200, deadline=None)
@given(reports)
def test_steps_and_marks_follow_from_the_reports_in_any_order(got: list[tuple[str, bool]]) -> None:
    m = detail(got)
    pic = picture.picture(m)
    by_status = {s.status: s for s in pic.steps}
    assert [s.status for s in pic.steps] == ["sending", *ACKS]
    reported = {"sending"} | {s for s, _ in got}
    for s in pic.steps:
        if s.status in reported:
            assert s.reached == "reported" and s.position == m.milestones[s.status].position
        elif RANK[s.status] <= RANK[m.state]:
            assert s.reached == "implied"  # a higher step was reported
        else:
            assert s.reached == "pending"
    # every non-duplicate report below the best one seen before it is out of order
    best = 0
    for entry in pic.entries[1:]:
        t = entry.item
        assert entry.duplicate == (t.duplicate_of is not None)
        assert entry.out_of_order == (not entry.duplicate and RANK[t.status] < best)
        if not entry.duplicate:
            best = max(best, RANK[t.status])
    # the why names the event that set the state, and every out-of-order and duplicate one
    assert f"event #{m.milestones[m.state].position} reported {m.state}" in pic.why[0]
    text = " ".join(pic.why)
    for entry in pic.entries:
        if entry.out_of_order:
            assert f"#{entry.item.position} {entry.item.status}" in text
        if entry.duplicate:
            assert f"#{entry.item.position} of #{entry.item.duplicate_of}" in text
    # latencies are measured on our clock from the latest step reported before, in path order
    latest = None
    for s in pic.steps:
        if s.reached == "reported":
            assert s.at is not None
            if latest is None:
                assert s.latency is None
            else:
                assert s.latency == (s.at - latest).total_seconds()
            latest = s.at if latest is None else max(latest, s.at)
    assert by_status["sending"].latency is None
