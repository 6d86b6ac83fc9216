"""WhatsAble decoder: both published samples, the derived key, and the documented traps."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import pytest

from projections.facts import DecodeError, Ignored, MessageObserved, OutgoingStatus, StatusReported
from projections.providers.whatsable import decode
from tests.support.decode_helpers import Decoding
from tests.support.samples import sample

run = Decoding("whatsable", decode).json


def expected_key(phone: str, seconds: float, text: str) -> str:
    """The derivation documented in the module docstring, written out independently."""
    material = json.dumps(
        [phone, f"{seconds:.3f}", text], separators=(",", ":"), ensure_ascii=False
    ).encode()
    return "derived:" + hashlib.sha256(material).hexdigest()[:32]


def incoming(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "last_messages": '[{"type":"user","content":"Hi","content_type":"text"}]',
        "phone_number": "8801734363287",
        "last_message_of_user": "Hi",
        "last_message_of_bot": "Hello!",
        "message_type": "text",
        "user_timestamp": 1711230104,
        "bot_timestamp": 1711230100,
    }
    data.update(fields)
    return {"event": "incoming_message", "data": data}


def test_sample_message_status_delivered() -> None:
    body, ctype = sample("whatsable", "message_status_delivered.json")
    assert decode(body, ctype, {}) == [
        StatusReported(
            key="wamid.123456789",
            status="delivered",
            raw="delivered",
            provider_time=dt.datetime(2024, 3, 23, 21, 41, 44, 477000, tzinfo=dt.UTC).timestamp(),
        )
    ]


def test_sample_incoming_message_gets_a_derived_key() -> None:
    body, ctype = sample("whatsable", "incoming_message.json")
    assert decode(body, ctype, {}) == [
        MessageObserved(
            key=expected_key("8801734363287", 1234567890.0, "Hello!"),
            direction="incoming",
            chat="8801734363287",
            sender="8801734363287",
            kind="text",
            text="Hello!",
            media=None,  # attachment_url on a text message is not its media
            provider_time=1234567890.0,
            derived_key=True,
        )
    ]


def test_derived_key_is_stable_for_retries_and_distinct_per_message() -> None:
    def key(payload: Any) -> str:
        fact = run(payload)[0]
        assert isinstance(fact, MessageObserved) and fact.derived_key
        return fact.key

    base = key(incoming())
    assert key(incoming()) == base  # a retry of the same event
    assert key(incoming(attachment_url="https://x.example/a?sig=2", bot_timestamp=9)) == base
    assert key(incoming(user_timestamp="1711230104")) == base  # same instant, other spelling
    assert key(incoming(last_message_of_user="Hi!")) != base
    assert key(incoming(user_timestamp=1711230105)) != base
    assert key(incoming(phone_number="8801734363288")) != base


def test_incoming_media_message() -> None:
    facts = run(
        incoming(message_type="image", last_message_of_user="", attachment_url="https://v/a.jpg")
    )
    assert facts == [
        MessageObserved(
            key=expected_key("8801734363287", 1711230104.0, ""),
            direction="incoming",
            chat="8801734363287",
            sender="8801734363287",
            kind="image",
            text=None,
            media="https://v/a.jpg",
            provider_time=1711230104.0,
            derived_key=True,
        )
    ]


def test_last_messages_json_string_is_not_parsed() -> None:
    fact = run(incoming(last_messages="[not json"))[0]
    assert isinstance(fact, MessageObserved) and fact.text == "Hi"


@pytest.mark.parametrize(
    ("raw", "status"),
    [("sent", "sent"), ("delivered", "delivered"), ("read", "read"), ("failed", "not_sent")],
)
def test_status_mapping(raw: str, status: OutgoingStatus) -> None:
    payload = {"event": "message_status", "data": {"message_id": "wamid.X", "status": raw}}
    assert run(payload) == [StatusReported(key="wamid.X", status=status, raw=raw)]


def test_unknown_status_and_event_are_ignored() -> None:
    payload = {"event": "message_status", "data": {"message_id": "wamid.X", "status": "queued"}}
    assert run(payload) == [
        Ignored(reason="unknown WhatsAble status 'queued'", event="message_status")
    ]
    assert run({"event": "conversation_closed", "data": {}}) == [
        Ignored(reason="unknown WhatsAble event 'conversation_closed'", event="conversation_closed")
    ]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"event": "message_status", "data": {"status": "read"}}, "data.message_id"),
        ({"event": "message_status", "data": {"message_id": "w"}}, "data.status"),
        ({"event": "message_status"}, "data"),
        (
            {
                "event": "message_status",
                "data": {"message_id": "w", "status": "read", "timestamp": "x"},
            },
            "data.timestamp",
        ),
        (incoming(user_timestamp=None), "data.user_timestamp"),
        (incoming(phone_number=" "), "data.phone_number"),
        (incoming(phone_number=None), "data.phone_number"),
        ({"data": {}}, "event"),
    ],
)
def test_decode_errors_name_the_field(payload: Any, field: str) -> None:
    with pytest.raises(DecodeError) as err:
        run(payload)
    assert field in err.value.reason
