"""Z-API decoder: every published sample, then the documented traps."""

from __future__ import annotations

from typing import Any

import pytest

from projections.facts import (
    DecodeError,
    Ignored,
    InstanceStatusReported,
    MessageDeleted,
    MessageObserved,
    StatusReported,
)
from projections.providers import zapi
from tests.support.decode_helpers import Decoding
from tests.support.samples import sample_names

MOMENT = 1632234645.0  # "momment": 1632234645000 (milliseconds) in the status examples


DECODING = Decoding("zapi", zapi.decode)
decode_sample = DECODING.sample
decode_obj = DECODING.json
reason = DECODING.reason


def received(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "ReceivedCallback",
        "messageId": "MID",
        "phone": "5544999999999",
        "connectedPhone": "554488888888",
        "fromMe": False,
        "isGroup": False,
        "momment": 1632228638000,
        "status": "RECEIVED",
    }
    return {**base, **fields}


# --- every sample file ------------------------------------------------------------------


def test_sample_set_is_the_one_these_tests_cover() -> None:
    assert sample_names("zapi") == [
        "connected.published.txt",
        "delivery_callback_on_send.json",
        "disconnected.json",
        "received_group_join_request.json",
        "received_image_duplicate_keys.json",
        "received_text.json",
        "status_PLAYED.json",
        "status_READ.json",
        "status_READ_BY_ME_incoming.json",
        "status_RECEIVED_delivered.json",
        "status_SENT.json",
    ]


def test_published_connected_example_is_not_json() -> None:
    with pytest.raises(DecodeError, match=r"^body is not valid JSON"):
        decode_sample("connected.published.txt")


def test_delivery_callback_means_handed_to_whatsapp() -> None:
    assert decode_sample("delivery_callback_on_send.json") == [
        StatusReported(
            key="A20DA9C0183A2D35A260F53F5D2B9244", status="sent", raw="DeliveryCallback"
        )
    ]


def test_disconnected_momment_is_seconds_here() -> None:
    assert decode_sample("disconnected.json") == [
        InstanceStatusReported(
            status="disconnected",
            raw="DisconnectedCallback",
            reason="Device has been disconnected",
            provider_time=1580163342.0,
        )
    ]


def test_group_join_request_is_a_system_message() -> None:
    assert decode_sample("received_group_join_request.json") == [
        MessageObserved(
            key="A20DA9C0183A2D35A260F53F5D2B9244",
            direction="incoming",
            chat="5544999999999-group",
            sender="5544999999999",  # participantPhone: the group member
            kind="system",
            text="MEMBERSHIP_APPROVAL_REQUEST",
            provider_time=1682017970.0,
        )
    ]


def test_image_with_duplicate_keys() -> None:
    assert decode_sample("received_image_duplicate_keys.json") == [
        MessageObserved(
            key="A20DA9C0183A2D35A260F53F5D2B9244",
            direction="incoming",
            chat="5544999999999",
            sender="5544999999999",
            kind="image",
            text=None,  # caption is ""
            media="https://",
            provider_time=1632228828.0,
        )
    ]


def test_received_text() -> None:
    assert decode_sample("received_text.json") == [
        MessageObserved(
            key="A20DA9C0183A2D35A260F53F5D2B9244",
            direction="incoming",
            chat="5544999999999",
            sender="5544999999999",
            kind="text",
            text="test",
            provider_time=1632228638.0,
        )
    ]


@pytest.mark.parametrize(
    ("name", "raw", "canonical"),
    [
        ("status_SENT.json", "SENT", "sent"),
        ("status_RECEIVED_delivered.json", "RECEIVED", "delivered"),
        ("status_READ.json", "READ", "read"),
        ("status_PLAYED.json", "PLAYED", "played"),
    ],
)
def test_status_samples(name: str, raw: str, canonical: str) -> None:
    assert decode_sample(name) == [
        StatusReported(
            key="999999999999999999999",
            status=canonical,  # type: ignore[arg-type]
            raw=raw,
            provider_time=MOMENT,
        )
    ]


def test_read_by_me_is_our_own_receipt_of_an_incoming_message() -> None:
    assert decode_sample("status_READ_BY_ME_incoming.json") == [
        Ignored(
            reason="READ_BY_ME: our own read of an incoming message",
            event="MessageStatusCallback/READ_BY_ME",
        )
    ]


# --- status callbacks --------------------------------------------------------------------


def test_every_id_of_a_batched_status_is_reported() -> None:
    payload = {"type": "MessageStatusCallback", "status": "READ", "ids": ["A", "B", "C"]}
    assert decode_obj(payload) == [
        StatusReported(key="A", status="read", raw="READ"),
        StatusReported(key="B", status="read", raw="READ"),
        StatusReported(key="C", status="read", raw="READ"),
    ]


def test_empty_ids_is_an_error() -> None:
    payload = {"type": "MessageStatusCallback", "status": "SENT", "ids": []}
    assert reason(payload) == "ids: empty list, no message to report on"


def test_missing_ids_is_an_error() -> None:
    assert reason({"type": "MessageStatusCallback", "status": "SENT"}) == "ids: missing"


def test_blank_id_names_its_position() -> None:
    payload = {"type": "MessageStatusCallback", "status": "SENT", "ids": ["A", " "]}
    assert reason(payload).startswith("ids[1]: expected a non-empty id")


def test_missing_status_is_an_error() -> None:
    assert reason({"type": "MessageStatusCallback", "ids": ["A"]}) == "status: missing"


def test_unknown_status_is_ignored_not_guessed() -> None:
    payload = {"type": "MessageStatusCallback", "status": "FROZEN", "ids": ["A"]}
    assert decode_obj(payload) == [
        Ignored(reason="unknown message status 'FROZEN'", event="MessageStatusCallback")
    ]


def test_older_message_received_spelling_is_delivered() -> None:
    payload = {"type": "MessageStatusCallback", "status": "MESSAGE_RECEIVED", "ids": ["A"]}
    assert decode_obj(payload) == [
        StatusReported(key="A", status="delivered", raw="MESSAGE_RECEIVED")
    ]


# --- received callbacks ------------------------------------------------------------------


def test_own_message_is_outgoing_and_reports_its_status() -> None:
    payload = received(fromMe=True, status="SENT", text={"message": "hello"})
    assert decode_obj(payload) == [
        MessageObserved(
            key="MID",
            direction="outgoing",
            chat="5544999999999",
            sender="554488888888",  # connectedPhone: our own number
            kind="text",
            text="hello",
            provider_time=1632228638.0,
        ),
        StatusReported(key="MID", status="sent", raw="SENT", provider_time=1632228638.0),
    ]


def test_incoming_message_status_is_not_an_ack() -> None:
    facts = decode_obj(received(status="READ", text={"message": "x"}))
    assert [type(f) for f in facts] == [MessageObserved]


def test_group_sender_is_the_participant() -> None:
    payload = received(
        phone="120363000000-group",
        isGroup=True,
        participantPhone="5511777777777",
        text={"message": "hi all"},
    )
    [fact] = decode_obj(payload)
    assert isinstance(fact, MessageObserved)
    assert (fact.chat, fact.sender) == ("120363000000-group", "5511777777777")


def test_voice_note_and_plain_audio() -> None:
    voice = decode_obj(received(audio={"audioUrl": "https://a/1", "ptt": True}))
    audio = decode_obj(received(audio={"audioUrl": "https://a/2", "mimeType": "audio/mpeg"}))
    assert [(f.kind, f.media) for f in voice + audio if isinstance(f, MessageObserved)] == [
        ("voice", "https://a/1"),
        ("audio", "https://a/2"),
    ]


def test_reaction_quotes_the_referenced_message() -> None:
    payload = received(
        reaction={
            "value": "❤️",
            "time": 1651878681150,
            "referencedMessage": {"messageId": "3EB0796DC6B777C0C7CD", "fromMe": True},
        }
    )
    assert decode_obj(payload) == [
        MessageObserved(
            key="MID",
            direction="incoming",
            chat="5544999999999",
            sender="5544999999999",
            kind="reaction",
            text="❤️",
            quoted="3EB0796DC6B777C0C7CD",
            provider_time=1632228638.0,
        )
    ]


def test_reply_quotes_reference_message_id() -> None:
    payload = received(
        referenceMessageId="ORIG", buttonsResponseMessage={"buttonId": "1", "message": "Great"}
    )
    [fact] = decode_obj(payload)
    assert isinstance(fact, MessageObserved)
    assert (fact.kind, fact.text, fact.quoted) == ("other", "Great", "ORIG")


@pytest.mark.parametrize(
    ("content", "kind", "text", "media"),
    [
        ({"video": {"videoUrl": "https://v", "caption": "clip"}}, "video", "clip", "https://v"),
        (
            {"document": {"documentUrl": "https://d", "fileName": "a.pdf"}},
            "document",
            None,
            "https://d",
        ),
        ({"sticker": {"stickerUrl": "https://s"}}, "sticker", None, "https://s"),
        ({"location": {"latitude": -23.5, "longitude": -46.6}}, "location", None, None),
        ({"contact": {"displayName": "Ana", "vCard": "BEGIN:VCARD"}}, "contact", "Ana", None),
        (
            {"poll": {"question": "Best API?", "options": [{"name": "Z"}]}},
            "poll",
            "Best API?",
            None,
        ),
        ({"product": {"title": "thing"}}, "other", None, None),
    ],
)
def test_content_kinds(
    content: dict[str, Any], kind: str, text: str | None, media: str | None
) -> None:
    [fact] = decode_obj(received(**content))
    assert isinstance(fact, MessageObserved)
    assert (fact.kind, fact.text, fact.media) == (kind, text, media)


@pytest.mark.parametrize(("from_me", "direction"), [(True, "outgoing"), (False, "incoming")])
def test_revoke_notification_is_a_deletion(from_me: bool, direction: str) -> None:
    payload = received(fromMe=from_me, notification="REVOKE", status="RECEIVED")
    assert decode_obj(payload) == [
        MessageDeleted(
            key="MID",
            raw="REVOKE",
            direction=direction,  # type: ignore[arg-type]
            provider_time=1632228638.0,
        )
    ]


def test_revoke_prefers_reference_message_id() -> None:
    [fact] = decode_obj(received(notification="REVOKE", referenceMessageId="ORIG"))
    assert isinstance(fact, MessageDeleted)
    assert fact.key == "ORIG"


def test_edit_and_poll_vote_are_ignored() -> None:
    assert decode_obj(received(isEdit=True, text={"message": "fixed"})) == [
        Ignored(reason="message edit (acklog does not track edits)", event="ReceivedCallback")
    ]
    assert decode_obj(received(pollVote={"pollMessageId": "P", "options": [{"name": "Z"}]})) == [
        Ignored(reason="poll vote", event="ReceivedCallback/pollVote")
    ]


def test_moment_spelling_and_callback_case_variant_are_accepted() -> None:
    payload = received(type="ReceivedCallBack", text={"message": "x"})
    del payload["momment"]
    payload["moment"] = 1632228638000
    [fact] = decode_obj(payload)
    assert isinstance(fact, MessageObserved)
    assert fact.provider_time == 1632228638.0


def test_received_without_message_id_names_the_field() -> None:
    payload = received(text={"message": "x"})
    del payload["messageId"]
    assert reason(payload) == "messageId: missing message id"


# --- delivery / connection / envelope ----------------------------------------------------


def test_delivery_callback_with_error_is_a_failure() -> None:
    payload = {
        "type": "DeliveryCallback",
        "messageId": "M1",
        "zaapId": "Z1",
        "momment": 1768854685097,
        "error": "number not exists",
    }
    assert decode_obj(payload) == [
        StatusReported(
            key="M1",
            status="not_sent",
            raw="DeliveryCallback",
            provider_time=1768854685.097,
            error_text="number not exists",
        )
    ]


def test_delivery_callback_is_keyed_by_message_id_not_zaap_id() -> None:
    assert reason({"type": "DeliveryCallback", "zaapId": "Z1"}) == "messageId: missing message id"


def test_connected_callback() -> None:
    payload = {"type": "ConnectedCallback", "connected": True, "momment": 1580163342}
    assert decode_obj(payload) == [
        InstanceStatusReported(
            status="connected", raw="ConnectedCallback", provider_time=1580163342.0
        )
    ]


def test_presence_is_ignored() -> None:
    payload = {"type": "PresenceChatCallback", "phone": "5544999999999", "status": "COMPOSING"}
    assert decode_obj(payload) == [
        Ignored(
            reason="event type 'PresenceChatCallback' is not folded", event="PresenceChatCallback"
        )
    ]


def test_missing_type_is_an_error() -> None:
    assert reason({"ids": ["A"], "status": "SENT"}) == "type: missing event type"


def test_bad_moment_names_the_field() -> None:
    payload = {"type": "MessageStatusCallback", "status": "SENT", "ids": ["A"]}
    assert reason({**payload, "momment": "soon"}).startswith("momment: not a timestamp")
    assert reason({**payload, "momment": 10**400}).startswith("momment: timestamp out of range")
