"""Twilio decoder: every published sample, then the documented traps."""

from __future__ import annotations

import urllib.parse

import pytest

from projections.facts import DecodeError, Fact, Ignored, MessageObserved, StatusReported
from projections.providers import twilio
from tests.support.samples import FORM, JSON, sample, sample_names


def decode_sample(name: str) -> list[Fact]:
    body, ctype = sample("twilio", name)
    assert ctype == FORM
    return twilio.decode(body, ctype, {"Content-Type": ctype})


def decode_form(**fields: str) -> list[Fact]:
    return twilio.decode(urllib.parse.urlencode(fields).encode(), FORM, {})


def reason(body: bytes, ctype: str | None = FORM) -> str:
    with pytest.raises(DecodeError) as info:
        twilio.decode(body, ctype, {})
    return info.value.reason


# --- every sample file ------------------------------------------------------------------


def test_sample_set_is_the_one_these_tests_cover() -> None:
    assert sample_names("twilio") == [
        "incoming_image_whatsapp.json",
        "incoming_location_whatsapp.json",
        "status_delivered_whatsapp.json",
        "status_failed_21610_stop.json",
        "status_failed_63018_rate_limit.json",
        "status_read_minimal.json",
        "status_sent_messaging_service.json",
        "status_sent_whatsapp.json",
    ]


def test_incoming_image() -> None:
    assert decode_sample("incoming_image_whatsapp.json") == [
        MessageObserved(
            key="MM21151abfaadc1fb79b782f8460862a52",
            direction="incoming",
            chat="whatsapp:+31612345678",
            sender="whatsapp:+31612345678",
            kind="image",
            text=None,  # Body is empty
            media="https://api.twilio.com/2010-04-01/Accounts/AC1a03647d811fab342c0ad608e382fab2"
            "/Messages/MM21151abfaadc1fb79b782f8460862a52/Media/ME5f0afa2336bd0f73ca553fb5a2e3150bc",
        )
    ]


def test_incoming_location() -> None:
    assert decode_sample("incoming_location_whatsapp.json") == [
        MessageObserved(
            key="SM9c871cd9649aa3829298e153ae6a8123",
            direction="incoming",
            chat="whatsapp:+31612345678",
            sender="whatsapp:+31612345678",
            kind="location",
        )
    ]


def test_status_delivered_has_no_timestamp() -> None:
    assert decode_sample("status_delivered_whatsapp.json") == [
        StatusReported(
            key="SMdf55df64a2ff4920bb0748193cfbb640",
            status="delivered",
            raw="delivered",
            provider_time=None,
        )
    ]


def test_status_failed_21610() -> None:
    assert decode_sample("status_failed_21610_stop.json") == [
        StatusReported(
            key="SMe287d7109a5a925f182f0e07fe5b223b",
            status="not_sent",
            raw="failed",
            error_code="21610",
        )
    ]


def test_status_failed_63018() -> None:
    assert decode_sample("status_failed_63018_rate_limit.json") == [
        StatusReported(
            key="SMe287d7109a5a925f182f0e07fe5b223b",
            status="not_sent",
            raw="failed",
            error_code="63018",
        )
    ]


def test_status_read() -> None:
    assert decode_sample("status_read_minimal.json") == [
        StatusReported(key="SMe287d7109a5a925f182f0e07fe5b223b", status="read", raw="read")
    ]


def test_status_sent_via_messaging_service() -> None:
    assert decode_sample("status_sent_messaging_service.json") == [
        StatusReported(key="SM0b6e2697aae04182a9f5b5c7a8994c7f", status="sent", raw="sent")
    ]


def test_status_sent_whatsapp() -> None:
    assert decode_sample("status_sent_whatsapp.json") == [
        StatusReported(key="SM0cec4ed334e74bcbb64eb8b6684e9654", status="sent", raw="sent")
    ]


# --- statuses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("accepted", "sending"),
        ("scheduled", "sending"),
        ("queued", "sending"),
        ("sending", "sending"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("partially_delivered", "delivered"),
        ("read", "read"),
    ],
)
def test_progress_statuses(raw: str, canonical: str) -> None:
    assert decode_form(MessageSid="SM1", MessageStatus=raw) == [
        StatusReported(key="SM1", status=canonical, raw=raw)  # type: ignore[arg-type]
    ]


def test_undelivered_keeps_error_code_and_message() -> None:
    facts = decode_form(
        MessageSid="SM1",
        MessageStatus="undelivered",
        ErrorCode="63016",
        ErrorMessage="Outside the allowed window",
    )
    assert facts == [
        StatusReported(
            key="SM1",
            status="not_sent",
            raw="undelivered",
            error_code="63016",
            error_text="Outside the allowed window",
        )
    ]


def test_canceled_is_a_failure_without_error_code() -> None:
    assert decode_form(MessageSid="SM1", MessageStatus="canceled") == [
        StatusReported(key="SM1", status="not_sent", raw="canceled")
    ]


def test_error_code_on_a_success_is_not_a_failure() -> None:
    assert decode_form(MessageSid="SM1", MessageStatus="delivered", ErrorCode="30008") == [
        StatusReported(key="SM1", status="delivered", raw="delivered")
    ]


def test_sms_status_alias_is_read_when_message_status_is_absent() -> None:
    assert decode_form(SmsSid="SM1", SmsStatus="sent") == [
        StatusReported(key="SM1", status="sent", raw="sent")
    ]


def test_unknown_status_is_ignored_not_guessed() -> None:
    assert decode_form(MessageSid="SM1", MessageStatus="exploded") == [
        Ignored(reason="unknown MessageStatus 'exploded'", event="status")
    ]


# --- incoming messages -------------------------------------------------------------------


def test_incoming_text_with_received_status_and_reply_context() -> None:
    facts = decode_form(
        MessageSid="SM2",
        MessageStatus="received",
        From="whatsapp:+31600000000",
        To="whatsapp:+14155238886",
        Body="yes please",
        NumMedia="0",
        MessageType="text",
        OriginalRepliedMessageSid="SM1",
    )
    assert facts == [
        MessageObserved(
            key="SM2",
            direction="incoming",
            chat="whatsapp:+31600000000",
            sender="whatsapp:+31600000000",
            kind="text",
            text="yes please",
            quoted="SM1",
        )
    ]


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [("audio/ogg", "audio"), ("video/mp4", "video"), ("application/pdf", "document")],
)
def test_media_kind_is_inferred_from_the_content_type(content_type: str, kind: str) -> None:
    [fact] = decode_form(
        MessageSid="MM1", NumMedia="1", MediaUrl0="https://m/1", MediaContentType0=content_type
    )
    assert isinstance(fact, MessageObserved)
    assert (fact.kind, fact.media, fact.direction) == (kind, "https://m/1", "incoming")


def test_declared_message_type_wins() -> None:
    [fact] = decode_form(MessageSid="SM1", Body="", MessageType="sticker", MediaUrl0="u")
    assert isinstance(fact, MessageObserved)
    assert fact.kind == "sticker"


def test_neither_status_nor_message_is_an_error() -> None:
    assert reason(b"MessageSid=SM1&To=%2B1") == (
        "MessageStatus: missing, and no Body/NumMedia/MediaUrl0: "
        "neither a status callback nor an incoming message"
    )


# --- envelope ----------------------------------------------------------------------------


def test_missing_message_sid_names_the_field() -> None:
    assert reason(b"MessageStatus=sent") == "MessageSid: missing message id"


def test_json_body_is_refused() -> None:
    body = b'{"MessageSid": "SM1", "MessageStatus": "sent"}'
    assert reason(body) == "body is JSON: Twilio Messaging webhooks are form-encoded"
    assert reason(body, None) == "body is JSON: Twilio Messaging webhooks are form-encoded"


def test_json_content_type_is_refused() -> None:
    assert reason(b"MessageSid=SM1&MessageStatus=sent", JSON) == (
        "content type 'application/json': Twilio webhooks are form-encoded"
    )


def test_invalid_utf8_is_an_error() -> None:
    assert reason(b"MessageSid=\xff").startswith("form body is not valid UTF-8")


def test_content_type_is_optional() -> None:
    assert twilio.decode(b"MessageSid=SM1&MessageStatus=read", None, {}) == [
        StatusReported(key="SM1", status="read", raw="read")
    ]
