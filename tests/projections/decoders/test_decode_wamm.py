"""WAMM.chat decoder: every published sample, plus the documented traps (seeds/wamm.txt)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from projections.facts import (
    DecodeError,
    Ignored,
    MessageDeleted,
    MessageObserved,
    OutgoingStatus,
    StatusReported,
)
from projections.providers.wamm import decode
from tests.support.decode_helpers import Decoding
from tests.support.samples import sample


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()


run = Decoding("wamm", decode).json


def msg(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "msg_id": 42,
        "from_me": 1,
        "phone_acc": "79990000000",
        "phone": "79001234567",
        "tip_msg": "textMessage",
        "msg_text": "hi",
        "date_ins": "2023-05-24 12:35:29",
    }
    base.update(fields)
    return {"tip": "msg", "msg_data": base}


def test_sample_incoming_text() -> None:
    body, ctype = sample("wamm", "msg_incoming_text.json")
    assert decode(body, ctype, {}) == [
        MessageObserved(
            key="1234567",  # int msg_id → string key
            direction="incoming",  # from_me = 0
            chat="79001234567",
            sender="79001234567",
            kind="text",
            text="Good afternoon, I'm interested in your offer",
            media=None,
            quoted=None,
            provider_time=utc(2023, 5, 24, 12, 35, 29),
        )
    ]


def test_sample_state_delivered() -> None:
    body, ctype = sample("wamm", "msg_state_delivered.json")
    assert decode(body, ctype, {}) == [
        StatusReported(
            key="1234567",
            status="delivered",
            raw="delivered",
            provider_time=utc(2023, 5, 24, 22, 46, 3),
        )
    ]


def test_int_and_string_msg_id_give_the_same_key() -> None:
    observed = run(msg(msg_id=1234567, state="sent"))[0]
    acked = run({"tip": "msg_state", "msg_data": {"msg_id": "1234567", "state": "viewed"}})[0]
    assert isinstance(observed, MessageObserved) and isinstance(acked, StatusReported)
    assert observed.key == acked.key == "1234567"


def test_outgoing_message_with_state_also_reports_status() -> None:
    facts = run(
        msg(
            tip_msg="imageMessage",
            msg_text="",
            msg_link="https://files.example/1.jpg",
            qoute_msg_id=1234500,
            state="sending",
        )
    )
    assert facts == [
        MessageObserved(
            key="42",
            direction="outgoing",
            chat="79001234567",
            sender="79990000000",  # our own number (phone_acc)
            kind="image",
            text=None,
            media="https://files.example/1.jpg",
            quoted="1234500",
            provider_time=utc(2023, 5, 24, 12, 35, 29),
        ),
        StatusReported(
            key="42", status="sending", raw="sending", provider_time=utc(2023, 5, 24, 12, 35, 29)
        ),
    ]


def test_correctly_spelled_quote_field_is_a_fallback() -> None:
    observed = run(msg(quote_msg_id="77"))[0]
    assert isinstance(observed, MessageObserved) and observed.quoted == "77"


def test_group_message_sender_is_sender_id() -> None:
    observed = run(msg(from_me=0, phone="120363@g.us", senderId="79005550000", state="received"))
    assert observed == [
        MessageObserved(
            key="42",
            direction="incoming",
            chat="120363@g.us",
            sender="79005550000",
            kind="text",
            text="hi",
            provider_time=utc(2023, 5, 24, 12, 35, 29),
        )
    ]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("sending", "sending"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("viewed", "read"),
        ("not sent", "not_sent"),
    ],
)
def test_msg_state_mapping(raw: str, status: OutgoingStatus) -> None:
    facts = run({"tip": "msg_state", "msg_data": {"msg_id": "9", "state": raw}})
    assert facts == [StatusReported(key="9", status=status, raw=raw)]


def test_msg_state_deleted_is_a_deletion() -> None:
    payload = {"tip": "msg_state", "msg_data": {"msg_id": "9", "state": "deleted"}}
    assert run(payload) == [MessageDeleted(key="9", raw="deleted")]


def test_incoming_message_in_deleted_state() -> None:
    facts = run(msg(from_me=0, state="deleted"))
    assert facts[1:] == [
        MessageDeleted(
            key="42",
            raw="deleted",
            direction="incoming",
            provider_time=utc(2023, 5, 24, 12, 35, 29),
        )
    ]


def test_msg_state_received_is_about_an_incoming_message() -> None:
    facts = run({"tip": "msg_state", "msg_data": {"msg_id": "9", "state": "received"}})
    assert len(facts) == 1 and isinstance(facts[0], Ignored)
    assert facts[0].event == "msg_state" and "incoming" in facts[0].reason


def test_unknown_state_is_ignored_not_guessed() -> None:
    facts = run({"tip": "msg_state", "msg_data": {"msg_id": "9", "state": "archived"}})
    assert len(facts) == 1 and isinstance(facts[0], Ignored) and "archived" in facts[0].reason


def test_outgoing_message_with_unmapped_state() -> None:
    facts = run(msg(state="received"))
    assert isinstance(facts[0], MessageObserved)
    assert facts[1:] == [Ignored(reason="unmapped WAMM state 'received'", event="msg")]


def test_unknown_tip_is_ignored() -> None:
    assert run({"tip": "chat_state", "msg_data": [1, 2]}) == [
        Ignored(reason="unknown WAMM event tip 'chat_state'", event="chat_state")
    ]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"tip": "msg_state", "msg_data": {"state": "sent"}}, "msg_data.msg_id"),
        ({"tip": "msg_state", "msg_data": {"msg_id": "", "state": "sent"}}, "msg_data.msg_id"),
        ({"tip": "msg_state", "msg_data": {"msg_id": "9"}}, "msg_data.state"),
        ({"tip": "msg"}, "msg_data"),
        ({"tip": "msg", "msg_data": None}, "msg_data"),
        ({"msg_data": {}}, "tip"),
        (msg(msg_id=None), "msg_data.msg_id"),
        (msg(from_me=None), "msg_data.from_me"),
        (msg(from_me=2), "msg_data.from_me"),
        (msg(date_ins="yesterday"), "msg_data.date_ins"),
        (msg(msg_id=1.5), "msg_data.msg_id"),
    ],
)
def test_decode_errors_name_the_field(payload: Any, field: str) -> None:
    with pytest.raises(DecodeError) as err:
        run(payload)
    assert field in err.value.reason


def test_string_and_boolean_from_me_are_accepted() -> None:
    incoming = run(msg(from_me="0"))[0]
    outgoing = run(msg(from_me=True))[0]
    assert isinstance(incoming, MessageObserved) and incoming.direction == "incoming"
    assert isinstance(outgoing, MessageObserved) and outgoing.direction == "outgoing"


def test_not_json() -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode(b"tip=msg", "application/x-www-form-urlencoded", {})
