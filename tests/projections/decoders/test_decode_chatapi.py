"""Chat API decoder: both published samples, batches, and the documented traps."""

from __future__ import annotations

from typing import Any

import pytest

from projections.facts import (
    DecodeError,
    Ignored,
    InstanceStatusReported,
    MessageObserved,
    OutgoingStatus,
    StatusReported,
)
from projections.providers.chatapi import decode
from tests.support.decode_helpers import Decoding
from tests.support.samples import JSON, sample

SAMPLE_ID = "false_17472822486@c.us_DF38E6A25B42CC8CCE57EC40F"


run = Decoding("chatapi", decode).json


def test_sample_messages_from_me_despite_false_prefix() -> None:
    body, ctype = sample("chatapi", "messages_incoming.json")
    assert decode(body, ctype, {}) == [
        MessageObserved(
            key=SAMPLE_ID,
            direction="outgoing",  # fromMe: true wins over the "false_" prefix
            chat="17472822486@c.us",
            sender="17472822486@c.us",
            kind="text",
            text="Ok!",
            provider_time=1504208593.0,
        )
    ]


def test_sample_ack_delivered() -> None:
    body, ctype = sample("chatapi", "ack_delivered.json")
    assert decode(body, ctype, {}) == [
        StatusReported(key=SAMPLE_ID, status="delivered", raw="delivered")
    ]


def test_every_element_of_both_batches_is_decoded() -> None:
    payload = {
        "instanceId": "79926",
        "messages": [
            {
                "id": "false_1@c.us_A",
                "body": "https://s3.example/a.jpeg",
                "type": "image",
                "caption": "look",
                "fromMe": False,
                "author": "1@c.us",
                "time": 1638833014,
                "chatId": "1@c.us",
                "quotedMsgId": "true_1@c.us_Q",
                "ack": None,
            },
            {
                "id": "true_2@c.us_B",
                "body": "hello",
                "type": "chat",
                "fromMe": True,
                "author": "9@c.us",
                "time": 1638833015,
                "chatId": "2@c.us",
                "ack": 3,
            },
        ],
        "ack": [
            {"id": "true_2@c.us_B", "chatId": "2@c.us", "status": "sent"},
            {"id": "true_3@c.us_C", "chatId": "3@c.us", "status": "viewed"},
        ],
    }
    assert run(payload) == [
        MessageObserved(
            key="false_1@c.us_A",
            direction="incoming",
            chat="1@c.us",
            sender="1@c.us",
            kind="image",
            text="look",  # caption
            media="https://s3.example/a.jpeg",  # body is the file URL
            quoted="true_1@c.us_Q",
            provider_time=1638833014.0,
        ),
        MessageObserved(
            key="true_2@c.us_B",
            direction="outgoing",
            chat="2@c.us",
            sender="9@c.us",
            kind="text",
            text="hello",
            provider_time=1638833015.0,
        ),
        StatusReported(key="true_2@c.us_B", status="read", raw="3"),
        StatusReported(key="true_2@c.us_B", status="sent", raw="sent"),
        StatusReported(key="true_3@c.us_C", status="read", raw="viewed"),
    ]


def test_real_world_message_with_nulls() -> None:
    """Production payloads carry caption/quotedMsgId/ack as null and isForwarded as 0."""
    payload = {
        "messages": [
            {
                "id": "false_5@c.us_AF3E",
                "body": "Buenas",
                "fromMe": False,
                "self": 0,
                "isForwarded": 0,
                "author": "5@c.us",
                "time": 1638829630,
                "chatId": "5@c.us",
                "messageNumber": 108929,
                "type": "chat",
                "senderName": "R",
                "caption": None,
                "quotedMsgBody": None,
                "quotedMsgId": None,
                "quotedMsgType": None,
                "metadata": None,
                "ack": None,
                "chatName": "+5",
            }
        ],
        "instanceId": "1",
    }
    assert run(payload) == [
        MessageObserved(
            key="false_5@c.us_AF3E",
            direction="incoming",
            chat="5@c.us",
            sender="5@c.us",
            kind="text",
            text="Buenas",
            provider_time=1638829630.0,
        )
    ]


@pytest.mark.parametrize(
    ("raw", "status"),
    [("sent", "sent"), ("delivered", "delivered"), ("viewed", "read"), ("not sent", "not_sent")],
)
def test_ack_status_strings(raw: str, status: OutgoingStatus) -> None:
    facts = run({"ack": [{"id": "x", "status": raw}]})
    assert facts == [StatusReported(key="x", status=status, raw=raw)]


def test_unknown_ack_status_is_ignored() -> None:
    assert run({"ack": [{"id": "x", "status": "archived"}]}) == [
        Ignored(reason="unknown Chat API ack status 'archived'", event="ack")
    ]


def test_ack_field_on_incoming_message_is_ignored() -> None:
    facts = run({"messages": [{"id": "m", "fromMe": False, "body": "x", "type": "chat", "ack": 2}]})
    assert isinstance(facts[0], MessageObserved)
    assert facts[1:] == [Ignored(reason="ack on an incoming message", event="messages")]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("got qr code", InstanceStatusReported(status="qr_required", raw="got qr code")),
        ("loading", InstanceStatusReported(status="starting", raw="loading")),
        ("init", InstanceStatusReported(status="starting", raw="init")),
        ("authenticated", InstanceStatusReported(status="connected", raw="authenticated")),
        ("not_paid", InstanceStatusReported(status="unknown", raw="not_paid")),
        (
            {"accountStatus": "authenticated", "statusData": {"substatus": "phone"}},
            InstanceStatusReported(status="disconnected", raw="authenticated", reason="phone"),
        ),
        (
            {"accountStatus": "authenticated", "statusData": {"substatus": "normal"}},
            InstanceStatusReported(status="connected", raw="authenticated", reason="normal"),
        ),
    ],
)
def test_instance_status(status: Any, expected: InstanceStatusReported) -> None:
    assert run({"instanceId": "1", "status": status}) == [expected]


def test_chat_update_and_empty_payloads_are_ignored() -> None:
    assert run({"instanceId": "1", "chatUpdate": [{"old": {}, "new": {}}]}) == [
        Ignored(reason="chat updates are not folded", event="chatUpdate")
    ]
    assert run({"instanceId": "1", "messages": [], "ack": []}) == [
        Ignored(reason="payload has no messages, acks or instance status")
    ]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"ack": [{"id": "a", "status": "sent"}, {"status": "sent"}]}, "ack[1].id"),
        ({"ack": [{"id": "a"}]}, "ack[0].status"),
        ({"messages": [{"id": "m", "body": "x"}]}, "messages[0].fromMe"),
        ({"messages": [{"id": "m", "fromMe": "maybe"}]}, "messages[0].fromMe"),
        ({"messages": [{"fromMe": True}]}, "messages[0].id"),
        ({"messages": [{"id": "m", "fromMe": True, "time": "noon"}]}, "messages[0].time"),
        ({"messages": {"id": "m"}}, "$.messages"),
        ({"ack": [{"id": "a", "status": True}]}, "$.ack[0].status"),
    ],
)
def test_decode_errors_name_the_field(payload: Any, field: str) -> None:
    with pytest.raises(DecodeError) as err:
        run(payload)
    assert field in err.value.reason


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(DecodeError, match="object"):
        decode(b"[]", JSON, {})
