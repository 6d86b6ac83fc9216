"""Green-API decoder: every published sample, then the documented traps."""

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
from projections.providers import greenapi
from tests.support.decode_helpers import Decoding
from tests.support.samples import JSON, fixture_names, sample_names

DECODING = Decoding("greenapi", greenapi.decode)
decode_sample = DECODING.sample
decode_obj = DECODING.json
reason = DECODING.reason


INSTANCE = {"idInstance": 1234, "wid": "79001234567@c.us", "typeInstance": "whatsapp"}
SENDER = {"chatId": "79001234568@c.us", "sender": "79001234568@c.us", "senderName": "X"}


def message(type_webhook: str, message_data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "typeWebhook": type_webhook,
        "instanceData": INSTANCE,
        "timestamp": 1588091580,
        "idMessage": "MSG1",
        "senderData": SENDER,
        "messageData": message_data,
        **extra,
    }


# --- every sample file ------------------------------------------------------------------


def test_sample_set_is_the_one_these_tests_cover() -> None:
    assert sample_names("greenapi") == [
        "incomingMessageReceived_image.json",
        "incomingMessageReceived_quoted_reply.json",
        "incomingMessageReceived_text.json",
        "outgoingMessageStatus_failed_group_SWE004.json",
        "outgoingMessageStatus_noAccount.json",
        "outgoingMessageStatus_sent_apidog.json",
        "stateInstanceChanged_notAuthorized.json",
        "statusInstanceChanged_online.json",
    ]


def test_incoming_image() -> None:
    assert decode_sample("incomingMessageReceived_image.json") == [
        MessageObserved(
            key="F7AEC1B7086ECDC7E6E45923F5EDB825",
            direction="incoming",
            chat="79001234568@c.us",
            sender="79001234568@c.us",
            kind="image",
            text="Image",
            media="https://api.green-api.com/waInstance1234/downloadFile/19136A974392FA8CF584D70DD0E1AEDF",
            provider_time=1588091580.0,
        )
    ]


def test_incoming_quoted_reply_uses_quoted_message_stanza_id() -> None:
    # extendedTextMessageData.stanzaId (B7F3…) differs in the published example;
    # quotedMessage.stanzaId is the documented id of the replied-to message.
    assert decode_sample("incomingMessageReceived_quoted_reply.json") == [
        MessageObserved(
            key="F7AEC1B7086ECDC7E6E45923F5EDB825",
            direction="incoming",
            chat="79001234568@c.us",
            sender="79001234568@c.us",
            kind="text",
            text="Это",
            quoted="9A73322488DCB7D9689A6112F2528C9D",
            provider_time=1588091580.0,
        )
    ]


def test_incoming_text() -> None:
    assert decode_sample("incomingMessageReceived_text.json") == [
        MessageObserved(
            key="F7AEC1B7086ECDC7E6E45923F5EDB825",
            direction="incoming",
            chat="79001234568@c.us",
            sender="79001234568@c.us",
            kind="text",
            text="I use Green-API to send this message to you!",
            provider_time=1588091580.0,
        )
    ]


def test_status_failed_with_swe_description() -> None:
    assert decode_sample("outgoingMessageStatus_failed_group_SWE004.json") == [
        StatusReported(
            key="B3Q599E4A3724D50",
            status="not_sent",
            raw="failed",
            provider_time=1707200807.0,
            error_code="SWE004",
            error_text="SWE004: the number of participants in the group has been exceeded - 300",
        )
    ]


def test_status_no_account_is_a_failure() -> None:
    assert decode_sample("outgoingMessageStatus_noAccount.json") == [
        StatusReported(
            key="3EB0608D6A2901063D63",
            status="not_sent",
            raw="noAccount",
            provider_time=1586700802.0,
            error_code="noAccount",
            error_text="recipient has no WhatsApp account",
        )
    ]


def test_status_sent() -> None:
    assert decode_sample("outgoingMessageStatus_sent_apidog.json") == [
        StatusReported(
            key="ECE6BBEA514B66872790C3D9D52C5C19",
            status="sent",
            raw="sent",
            provider_time=1705901090.0,
        )
    ]


def test_state_not_authorized_needs_qr() -> None:
    assert decode_sample("stateInstanceChanged_notAuthorized.json") == [
        InstanceStatusReported(
            status="qr_required", raw="notAuthorized", provider_time=1586700690.0
        )
    ]


def test_socket_online_is_connected() -> None:
    assert decode_sample("statusInstanceChanged_online.json") == [
        InstanceStatusReported(status="connected", raw="online", provider_time=1586700690.0)
    ]


# --- statuses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("pending", "sending"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "read"),
    ],
)
def test_progress_statuses(raw: str, canonical: str) -> None:
    payload = {"typeWebhook": "outgoingMessageStatus", "idMessage": "M", "status": raw}
    assert decode_obj(payload) == [StatusReported(key="M", status=canonical, raw=raw)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("failed", None),
        ("fail", None),  # older docs' spelling
        ("notInGroup", "sender is not a participant of the group"),
        ("yellowCard", "sending suspended for spam activity (yellowCard)"),
        ("noActiveSession", "24-hour messaging window is closed"),
    ],
)
def test_failure_statuses_carry_the_status_as_error(raw: str, text: str | None) -> None:
    payload = {"typeWebhook": "outgoingMessageStatus", "idMessage": "M", "status": raw}
    assert decode_obj(payload) == [
        StatusReported(key="M", status="not_sent", raw=raw, error_code=raw, error_text=text)
    ]


def test_description_on_a_success_status_is_not_an_error() -> None:
    payload = {
        "typeWebhook": "outgoingMessageStatus",
        "idMessage": "M",
        "status": "delivered",
        "description": "SWE001: irrelevant",
    }
    assert decode_obj(payload) == [StatusReported(key="M", status="delivered", raw="delivered")]


def test_unknown_status_is_ignored_not_guessed() -> None:
    payload = {"typeWebhook": "outgoingMessageStatus", "idMessage": "M", "status": "bounced"}
    assert decode_obj(payload) == [
        Ignored(
            reason="unknown outgoingMessageStatus status 'bounced'", event="outgoingMessageStatus"
        )
    ]


def test_status_without_id_names_the_field() -> None:
    assert "idMessage" in reason({"typeWebhook": "outgoingMessageStatus", "status": "sent"})


def test_status_without_status_names_the_field() -> None:
    assert reason({"typeWebhook": "outgoingMessageStatus", "idMessage": "M"}) == "status: missing"


def test_numeric_id_is_rejected_with_its_path() -> None:
    assert "$.idMessage" in reason(
        {"typeWebhook": "outgoingMessageStatus", "idMessage": 5, "status": "sent"}
    )


# --- messages ----------------------------------------------------------------------------


def test_outgoing_api_message_is_observed_outgoing_without_a_status() -> None:
    payload = message(
        "outgoingAPIMessageReceived",
        {"typeMessage": "textMessage", "textMessageData": {"textMessage": "hi"}},
    )
    assert decode_obj(payload) == [
        MessageObserved(
            key="MSG1",
            direction="outgoing",
            chat="79001234568@c.us",
            sender="79001234568@c.us",
            kind="text",
            text="hi",
            provider_time=1588091580.0,
        )
    ]


def test_message_sent_from_phone_is_outgoing() -> None:
    payload = message(
        "outgoingMessageReceived",
        {"typeMessage": "extendedTextMessage", "extendedTextMessageData": {"text": "see x.com"}},
    )
    [fact] = decode_obj(payload)
    assert isinstance(fact, MessageObserved)
    assert (fact.direction, fact.kind, fact.text) == ("outgoing", "text", "see x.com")


def test_reaction_quotes_the_message_reacted_to() -> None:
    payload = message(
        "incomingMessageReceived",
        {
            "typeMessage": "reactionMessage",
            "extendedTextMessageData": {"text": "👍"},
            "quotedMessage": {"stanzaId": "ORIG", "participant": "79001234568@c.us"},
        },
    )
    [fact] = decode_obj(payload)
    assert fact == MessageObserved(
        key="MSG1",
        direction="incoming",
        chat="79001234568@c.us",
        sender="79001234568@c.us",
        kind="reaction",
        text="👍",
        quoted="ORIG",
        provider_time=1588091580.0,
    )


def test_document_with_empty_caption_has_no_text() -> None:
    payload = message(
        "incomingMessageReceived",
        {
            "typeMessage": "documentMessage",
            "fileMessageData": {"downloadUrl": "https://d/1", "caption": "", "fileName": "a.pdf"},
        },
    )
    [fact] = decode_obj(payload)
    assert isinstance(fact, MessageObserved)
    assert (fact.kind, fact.text, fact.media) == ("document", None, "https://d/1")


def test_unlisted_message_type_is_other() -> None:
    payload = message("incomingMessageReceived", {"typeMessage": "groupInviteMessage"})
    [fact] = decode_obj(payload)
    assert isinstance(fact, MessageObserved)
    assert fact.kind == "other"


@pytest.mark.parametrize(
    ("type_webhook", "direction"),
    [("incomingMessageReceived", "incoming"), ("outgoingMessageReceived", "outgoing")],
)
def test_deleted_message_is_keyed_by_the_deleted_id(type_webhook: str, direction: str) -> None:
    payload = message(
        type_webhook,
        {"typeMessage": "deletedMessage", "deletedMessageData": {"stanzaId": "GONE"}},
    )
    assert decode_obj(payload) == [
        MessageDeleted(
            key="GONE",
            raw="deletedMessage",
            direction=direction,  # type: ignore[arg-type]
            provider_time=1588091580.0,
        )
    ]


def test_deleted_message_without_stanza_id_names_the_field() -> None:
    payload = message("incomingMessageReceived", {"typeMessage": "deletedMessage"})
    assert reason(payload) == "deletedMessageData.stanzaId: missing message id"


@pytest.mark.parametrize(
    ("type_message", "why"),
    [
        ("editedMessage", "message edit (acklog does not track edits)"),
        ("pollUpdateMessage", "poll vote"),
    ],
)
def test_edits_and_poll_votes_are_ignored(type_message: str, why: str) -> None:
    payload = message("incomingMessageReceived", {"typeMessage": type_message})
    assert decode_obj(payload) == [
        Ignored(reason=why, event=f"incomingMessageReceived/{type_message}")
    ]


def test_message_without_message_data_is_an_error() -> None:
    payload = message("incomingMessageReceived", {})
    del payload["messageData"]
    assert reason(payload) == "messageData: missing"


def test_message_without_type_message_names_the_field() -> None:
    assert reason(message("incomingMessageReceived", {})) == "messageData.typeMessage: missing"


# --- instance state ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical", "why"),
    [
        ("authorized", "connected", None),
        ("blocked", "banned", None),
        ("sleepMode", "disconnected", None),
        ("starting", "starting", None),
        ("yellowCard", "suspended", "sending suspended for spam activity (yellowCard)"),
        ("somethingNew", "unknown", None),
    ],
)
def test_state_instance_mapping(raw: str, canonical: str, why: str | None) -> None:
    payload = {"typeWebhook": "stateInstanceChanged", "timestamp": 1, "stateInstance": raw}
    assert decode_obj(payload) == [
        InstanceStatusReported(status=canonical, raw=raw, reason=why, provider_time=1.0)  # type: ignore[arg-type]
    ]


def test_socket_offline_is_disconnected() -> None:
    payload = {"typeWebhook": "statusInstanceChanged", "statusInstance": "offline"}
    assert decode_obj(payload) == [InstanceStatusReported(status="disconnected", raw="offline")]


def test_state_without_value_names_the_field() -> None:
    assert reason({"typeWebhook": "stateInstanceChanged"}) == "stateInstance: missing"


# --- envelope ----------------------------------------------------------------------------


def test_incoming_message_status_is_ignored() -> None:
    payload = {"typeWebhook": "incomingMessageStatus", "idMessage": "M", "status": "read"}
    assert decode_obj(payload) == [
        Ignored(
            reason="status of an incoming message (our own receipt)", event="incomingMessageStatus"
        )
    ]


def test_unknown_webhook_type_is_ignored() -> None:
    assert decode_obj({"typeWebhook": "deviceInfo", "deviceData": {"battery": 5}}) == [
        Ignored(reason="webhook type 'deviceInfo' is not folded", event="deviceInfo")
    ]


def test_missing_webhook_type_is_an_error() -> None:
    assert reason({"idMessage": "M"}) == "typeWebhook: missing webhook type"


def test_not_json_is_an_error() -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        greenapi.decode(b"typeWebhook=x", JSON, {})


def test_bad_timestamp_names_the_field() -> None:
    payload = {"typeWebhook": "statusInstanceChanged", "statusInstance": "online"}
    assert reason({**payload, "timestamp": "yesterday"}).startswith("timestamp: not a timestamp")
    assert reason({**payload, "timestamp": 10**30}).startswith("timestamp: timestamp out of range")
    assert reason({**payload, "timestamp": 10**400}).startswith("timestamp: timestamp out of range")


# --- in-repo fixtures (tests/fixtures/greenapi, sources in tests/fixtures/SOURCES.md) -------


def test_fixture_set_is_the_one_these_tests_cover() -> None:
    assert fixture_names("greenapi") == [
        "incomingMessageReceived_poll_pollCreationMessage.json",
        "stateInstanceChanged_yellowCard.json",
    ]


def test_poll_in_the_older_pollcreationmessage_field() -> None:
    """Older docs put the poll in ``messageData.pollCreationMessage`` (now ``pollMessageData``)."""
    assert decode_sample("incomingMessageReceived_poll_pollCreationMessage.json") == [
        MessageObserved(
            key="F7AEC1B7086ECDC7E6E45923F5EDB825",
            direction="incoming",
            chat="79001234568@c.us",
            sender="79001234568@c.us",
            kind="poll",
            text="Poll Name",
            provider_time=1588091580.0,
        )
    ]


def test_yellow_card_is_a_suspension_not_a_ban() -> None:
    """GetStateInstance: sending suspended for spam, queued 24 h, session up — not ``blocked``."""
    assert decode_sample("stateInstanceChanged_yellowCard.json") == [
        InstanceStatusReported(
            status="suspended",
            raw="yellowCard",
            reason="sending suspended for spam activity (yellowCard)",
            provider_time=1700000000.0,
        )
    ]
