"""Qikchat decoder: every published sample (incl. the invalid-JSON one), plus traps."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from projections.facts import DecodeError, Ignored, MessageObserved, OutgoingStatus, StatusReported
from projections.providers.qikchat import decode
from tests.support.decode_helpers import Decoding
from tests.support.samples import sample

KEY = "52JH6WmuSruAVyXvBBYemd0Ia"
TIME = dt.datetime(2022, 2, 15, 11, 30, 35, tzinfo=dt.UTC).timestamp()


run = Decoding("qikchat", decode).json


def incoming(message: dict[str, Any], msg_id: Any = "Q1") -> dict[str, Any]:
    base = {"from": "9184XXXXXXX", "timestamp": "2022-02-15T11:30:35.000Z"}
    return {
        "event": "whatsapp:message:in",
        "payload": {"id": msg_id, "name": "whatsapp", "message": {**base, **message}},
    }


def status(value: Any, msg_id: Any = "Q1") -> dict[str, Any]:
    return {
        "event": "whatsapp:message:status",
        "payload": {"id": msg_id, "status": value, "timestamp": "2022-02-15T11:30:35.000Z"},
    }


def test_sample_incoming_text() -> None:
    body, ctype = sample("qikchat", "incoming_text.json")
    assert decode(body, ctype, {}) == [
        MessageObserved(
            key=KEY,
            direction="incoming",
            chat="9184XXXXXXX",
            sender="9184XXXXXXX",
            kind="text",
            text="I want this product",
            provider_time=TIME,
        )
    ]


def test_sample_incoming_image() -> None:
    body, ctype = sample("qikchat", "incoming_image.json")
    assert decode(body, ctype, {}) == [
        MessageObserved(
            key=KEY,
            direction="incoming",
            chat="9184XXXXXXX",
            sender="9184XXXXXXX",
            kind="image",
            text=None,
            media="media-url",  # url preferred over the media id
            provider_time=TIME,
        )
    ]


def test_sample_status_read() -> None:
    body, ctype = sample("qikchat", "status_read.json")
    assert decode(body, ctype, {}) == [
        StatusReported(key=KEY, status="read", raw="read", provider_time=TIME)
    ]


def test_sample_published_status_is_not_json() -> None:
    body, ctype = sample("qikchat", "status_read.published.txt")
    with pytest.raises(DecodeError, match=r"not valid JSON.*trailing comma"):
        decode(body, ctype, {})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("sent", "sent"), ("delivered", "delivered"), ("read", "read"), ("failed", "not_sent")],
)
def test_status_mapping(raw: str, expected: OutgoingStatus) -> None:
    assert run(status(raw)) == [
        StatusReported(key="Q1", status=expected, raw=raw, provider_time=TIME)
    ]


def test_unknown_status_and_event_are_ignored() -> None:
    assert run(status("enqueued")) == [
        Ignored(reason="unknown Qikchat status 'enqueued'", event="whatsapp:message:status")
    ]
    assert run({"event": "whatsapp:template:status", "payload": None}) == [
        Ignored(
            reason="unknown Qikchat event 'whatsapp:template:status'",
            event="whatsapp:template:status",
        )
    ]


def test_reply_media_id_and_caption() -> None:
    payload = incoming(
        {
            "type": "document",
            "document": {"id": "MEDIA9", "caption": "invoice", "mime_type": "application/pdf"},
            "context": {"from": "9180", "id": "wamid.ORIG"},
        },
        msg_id=12345,
    )
    assert run(payload) == [
        MessageObserved(
            key="12345",
            direction="incoming",
            chat="9184XXXXXXX",
            sender="9184XXXXXXX",
            kind="document",
            text="invoice",
            media="MEDIA9",
            quoted="wamid.ORIG",
            provider_time=TIME,
        )
    ]


def test_voice_and_reaction() -> None:
    voice = run(incoming({"type": "audio", "audio": {"id": "A1", "voice": True}}))[0]
    assert isinstance(voice, MessageObserved) and voice.kind == "voice" and voice.media == "A1"
    reaction = run(
        incoming({"type": "reaction", "reaction": {"message_id": "wamid.R", "emoji": "👍"}})
    )[0]
    assert isinstance(reaction, MessageObserved)
    assert (reaction.kind, reaction.text, reaction.quoted) == ("reaction", "👍", "wamid.R")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (status("read", msg_id=None), "payload.id"),
        (status("read", msg_id=""), "payload.id"),
        (status(None), "payload.status"),
        (incoming({"type": "text", "text": {"body": "x"}}, msg_id=None), "payload.id"),
        ({"event": "whatsapp:message:in", "payload": {"id": "Q"}}, "message"),
        ({"event": "whatsapp:message:status"}, "payload"),
        (incoming({"timestamp": "tomorrow"}), "payload.message.timestamp"),
        (incoming({"text": "plain"}), "$.payload.message.text"),
        ({"payload": {}}, "event"),
    ],
)
def test_decode_errors_name_the_field(payload: Any, field: str) -> None:
    with pytest.raises(DecodeError) as err:
        run(payload)
    assert field in err.value.reason
