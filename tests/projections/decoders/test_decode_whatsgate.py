"""WhatsGate decoder: every file of the sample folder, plus the documented traps."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from projections.facts import (
    DecodeError,
    Ignored,
    InstanceStatus,
    InstanceStatusReported,
    MessageDeleted,
    MessageObserved,
    OutgoingStatus,
    StatusReported,
)
from projections.providers.whatsgate import decode, event_id
from tests.support.decode_helpers import Decoding
from tests.support.samples import sample

MSG_ID = "3EB0436AE1E682FF3A37"
EVENT_TIME = dt.datetime(2022, 9, 7, 18, 29, 37, tzinfo=dt.UTC).timestamp()
MSG_TIME = 1662575377.0  # message.timestamp; equals event_date read as UTC


run = Decoding("whatsgate", decode).json


def envelope(action: str, **message: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "_id": "ABC",
        "id": "true_79991112233@c.us_ABC",
        "ack": 1,
        "body": "hello",
        "type": "chat",
        "timestamp": 1662575377,
        "from": "79999999999@c.us",
        "to": "79991112233@c.us",
    }
    base.update(message)
    return {
        "id": 7,
        "whatsapp_id": "191b80a9238",
        "event_action": action,
        "event_date": "2022-09-07 18:29:37",
        "status_code": None,
        "event_data": {"message": base},
    }


def test_sample_message_incoming() -> None:
    body, ctype = sample("whatsgate", "message_incoming.json")
    assert decode(body, ctype, {}) == [
        MessageObserved(
            key=MSG_ID,
            direction="incoming",
            chat="79991112233@c.us",
            sender="79991112233@c.us",
            kind="text",
            text="212",
            provider_time=MSG_TIME,
        )
    ]
    assert event_id(body) == "18"


def test_sample_sent_async_despite_false_prefix() -> None:
    body, ctype = sample("whatsgate", "sent_async.json")
    assert decode(body, ctype, {}) == [
        MessageObserved(
            key=MSG_ID,
            direction="outgoing",  # from event_action, not the "false_" id prefix
            chat="79991112233@c.us",
            sender="79999999999@c.us",
            kind="text",
            text="212",
            provider_time=MSG_TIME,
        ),
        StatusReported(key=MSG_ID, status="sent", raw="1", provider_time=EVENT_TIME),
    ]
    assert event_id(body) == "19"


def test_sample_ack_sent() -> None:
    body, ctype = sample("whatsgate", "ack.json")
    assert decode(body, ctype, {}) == [
        MessageObserved(
            key=MSG_ID,
            direction="outgoing",
            chat="79991112233@c.us",
            sender="79999999999@c.us",
            kind="text",
            text="212",
            provider_time=MSG_TIME,
        ),
        StatusReported(key=MSG_ID, status="sent", raw="1", provider_time=EVENT_TIME),
    ]
    assert event_id(body) == "19"


def test_sample_create_outgoing() -> None:
    body, ctype = sample("whatsgate", "create_outgoing.json")
    assert decode(body, ctype, {}) == [
        MessageObserved(
            key=MSG_ID,
            direction="outgoing",
            chat="79999999999@c.us",  # "to"
            sender="79991112233@c.us",  # "from"
            kind="text",
            text="212",
            provider_time=MSG_TIME,
        ),
        StatusReported(key=MSG_ID, status="sent", raw="1", provider_time=EVENT_TIME),
    ]
    assert event_id(body) == "18"


def test_sample_ready() -> None:
    body, ctype = sample("whatsgate", "ready.json")
    assert decode(body, ctype, {}) == [
        InstanceStatusReported(
            status="connected",
            raw="ready",
            provider_time=dt.datetime(2023, 1, 24, 18, 29, 37, tzinfo=dt.UTC).timestamp(),
        )
    ]
    assert event_id(body) == "19"


def test_sample_disconnect() -> None:
    body, ctype = sample("whatsgate", "disconnect.json")
    assert decode(body, ctype, {}) == [
        InstanceStatusReported(
            status="disconnected",
            raw="disconnect",
            reason="Client disconnected",
            provider_time=EVENT_TIME,
        )
    ]


def test_sample_error_has_no_message_to_fold() -> None:
    body, ctype = sample("whatsgate", "error.json")
    assert decode(body, ctype, {}) == [
        Ignored(
            reason="error event names no message: Specified number not in your contact list",
            event="error",
        )
    ]
    assert event_id(body) == "19"


def test_sample_required_ack_response_is_not_a_webhook() -> None:
    """The body the RECEIVER returns: no event_action → DecodeError, and no event id."""
    body, ctype = sample("whatsgate", "required_ack_response.json")
    with pytest.raises(DecodeError, match="event_action"):
        decode(body, ctype, {})
    assert event_id(body) is None


def test_sample_message_object_is_not_a_webhook() -> None:
    """A bare message object: no envelope → DecodeError; its message ``id`` is no event id."""
    body, ctype = sample("whatsgate", "message_object_with_quoted.json")
    with pytest.raises(DecodeError, match="event_action"):
        decode(body, ctype, {})
    assert event_id(body) is None


def test_message_object_with_quoted_inside_an_envelope() -> None:
    body, _ = sample("whatsgate", "message_object_with_quoted.json")
    payload = {"id": 20, "event_action": "message", "event_data": {"message": json.loads(body)}}
    assert run(payload) == [
        MessageObserved(
            key=MSG_ID,
            direction="incoming",
            chat="79999999999@c.us",
            sender="79999999999@c.us",
            kind="text",
            text="212",
            quoted="3EB07621A4D08F9F59E0",
            provider_time=MSG_TIME,
        )
    ]


@pytest.mark.parametrize(
    ("ack", "status"),
    [(1, "sent"), (2, "delivered"), (3, "read"), (-1, "not_sent"), (0, "sending"), (4, "played")],
)
def test_ack_mapping(ack: int, status: OutgoingStatus) -> None:
    facts = run(envelope("ack", ack=ack))
    assert facts[1:] == [
        StatusReported(key="ABC", status=status, raw=str(ack), provider_time=EVENT_TIME)
    ]


def test_unknown_ack_value_is_ignored() -> None:
    facts = run(envelope("ack", ack=9))
    assert isinstance(facts[0], MessageObserved)
    assert facts[1:] == [Ignored(reason="unknown WhatsGate ack value '9'", event="ack")]


def test_sent_event_is_at_least_sent() -> None:
    pending = run(envelope("sent", ack=0))
    failed = run(envelope("sent", ack=-1))
    missing = run(envelope("sent", ack=None))
    read = run(envelope("sent", ack=3))
    sent = StatusReported(key="ABC", status="sent", raw="sent", provider_time=EVENT_TIME)
    assert pending[1:] == [sent] and failed[1:] == [sent] and missing[1:] == [sent]
    assert read[1:] == [StatusReported(key="ABC", status="read", raw="3", provider_time=EVENT_TIME)]


def test_create_without_ack_only_observes() -> None:
    facts = run(envelope("create", ack=None))
    assert len(facts) == 1 and isinstance(facts[0], MessageObserved)


def test_group_message_author_is_the_sender() -> None:
    facts = run(envelope("message", **{"from": "120363@g.us", "author": "79005550000@c.us"}))
    assert facts == [
        MessageObserved(
            key="ABC",
            direction="incoming",
            chat="120363@g.us",
            sender="79005550000@c.us",
            kind="text",
            text="hello",
            provider_time=MSG_TIME,
        )
    ]


@pytest.mark.parametrize(
    ("wa_type", "kind"),
    [("ptt", "voice"), ("image", "image"), ("vcard", "contact"), ("e2e_notification", "system")],
)
def test_kinds(wa_type: str, kind: str) -> None:
    observed = run(envelope("message", type=wa_type))[0]
    assert isinstance(observed, MessageObserved) and observed.kind == kind


def test_revoked_message_is_a_deletion() -> None:
    assert run(envelope("message", type="revoked")) == [
        MessageDeleted(key="ABC", raw="revoked", direction="incoming", provider_time=EVENT_TIME)
    ]


@pytest.mark.parametrize(
    ("reason", "status"),
    [("LOGOUT", "logged_out"), ("TOS_BLOCK", "banned"), ("NAVIGATION", "disconnected")],
)
def test_disconnect_reasons(reason: str, status: InstanceStatus) -> None:
    facts = run({"id": 1, "event_action": "disconnect", "event_data": {"reason": reason}})
    assert facts == [InstanceStatusReported(status=status, raw="disconnect", reason=reason)]


def test_error_that_names_a_message_is_a_failure() -> None:
    payload = envelope("error")
    payload["status_code"] = 400
    payload["event_data"]["error"] = "Specified number not in your contact list"
    facts = run(payload)
    assert isinstance(facts[0], MessageObserved) and facts[0].direction == "outgoing"
    assert facts[1:] == [
        StatusReported(
            key="ABC",
            status="not_sent",
            raw="error",
            provider_time=EVENT_TIME,
            error_code="400",
            error_text="Specified number not in your contact list",
        )
    ]


def test_unknown_event_action_is_ignored() -> None:
    assert run({"id": 3, "event_action": "qr", "event_data": "data"}) == [
        Ignored(reason="unknown WhatsGate event_action 'qr'", event="qr")
    ]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (envelope("message", _id=None), "event_data.message._id"),
        (envelope("ack", ack=None), "event_data.message.ack"),
        ({"id": 1, "event_action": "ack", "event_data": {}}, "message"),
        ({"id": 1, "event_action": "ack"}, "event_data"),
        (envelope("message", timestamp="soon"), "event_data.message.timestamp"),
        (envelope("message", ack=True), "ack"),
    ],
)
def test_decode_errors_name_the_field(payload: Any, field: str) -> None:
    with pytest.raises(DecodeError) as err:
        run(payload)
    assert field in err.value.reason


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"id": "evt-5", "event_action": "ack"}', "evt-5"),
        (b'{"id": 0, "event_action": "x"}', "0"),
        (b'{"event_action": "ack"}', None),
        (b'{"id": 1.5, "event_action": "ack"}', None),
        (b'{"id": true, "event_action": "ack"}', None),
        (b"not json", None),
        (b"[18]", None),
    ],
)
def test_event_id(body: bytes, expected: str | None) -> None:
    assert event_id(body) == expected
