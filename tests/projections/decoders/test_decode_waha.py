"""WAHA decoder: every published sample, then the documented traps."""

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
from projections.providers import waha
from tests.support.decode_helpers import Decoding
from tests.support.samples import JSON, fixture_names, sample, sample_names

OUR_ID = "true_11111111111@c.us_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


DECODING = Decoding("waha", waha.decode)
decode_sample = DECODING.sample
decode_obj = DECODING.json
reason = DECODING.reason


def event(name: str, payload: Any, **envelope: Any) -> dict[str, Any]:
    return {"event": name, "session": "default", "engine": "NOWEB", "payload": payload, **envelope}


# --- every sample file ------------------------------------------------------------------


def test_sample_set_is_the_one_these_tests_cover() -> None:
    assert sample_names("waha") == [
        "message_ack_error_noweb.json",
        "message_ack_read.json",
        "message_ack_status_broadcast_read.json",
        "message_media_document.json",
        "message_media_image.json",
        "message_revoked_docs_bug.json",
        "message_text.json",
        "poll_vote.json",
        "presence_update_group.json",
        "session_status_working.json",
    ]


def test_ack_error_is_not_sent_and_has_an_event_id() -> None:
    body, _ = sample("waha", "message_ack_error_noweb.json")
    assert waha.event_id(body) == "evt_01je7rhjkgcds9be5m10qh3cmf"
    assert decode_sample("message_ack_error_noweb.json") == [
        StatusReported(
            key="true_8613700000000@c.us_3EB0D971A974F4AC7F77C5", status="not_sent", raw="-1"
        )
    ]


def test_ack_read_has_no_timestamp() -> None:
    assert decode_sample("message_ack_read.json") == [
        StatusReported(
            key="true_11111111111@c.us_4CC5EDD64BC22EBA6D639F2AF571346C", status="read", raw="3"
        )
    ]


def test_status_broadcast_read_is_per_participant() -> None:
    assert decode_sample("message_ack_status_broadcast_read.json") == [
        StatusReported(
            key="true_status@broadcast_AAAAAAAAAAAAAAAAA",
            status="read",
            raw="3",
            participant="321321@c.us",
        )
    ]


def test_document_message_is_incoming_whatever_its_id_prefix() -> None:
    # event=message is WAHA's incoming-only event; the docs' ids were copy-pasted with true_
    assert decode_sample("message_media_document.json") == [
        MessageObserved(
            key=OUR_ID,
            direction="incoming",
            chat="11111111111@c.us",
            sender="11111111111@c.us",
            kind="document",
            media=f"http://localhost:3000/api/files/{OUR_ID}.pdf",
            provider_time=1667561485.0,
        )
    ]


def test_image_message_is_incoming() -> None:
    # event=message is WAHA's incoming-only event; the docs' ids were copy-pasted with true_
    assert decode_sample("message_media_image.json") == [
        MessageObserved(
            key=OUR_ID,
            direction="incoming",
            chat="11111111111@c.us",
            sender="11111111111@c.us",
            kind="image",
            media=f"http://localhost:3000/api/files/{OUR_ID}.jpg",
            provider_time=1667561485.0,
        )
    ]


def test_documented_revoke_example_cannot_be_keyed() -> None:
    # Sent as "message.ack" (doc bug), shaped like message.revoked, and WAHA says its
    # before/after ids are not message ids: recognised as a revoke, ignored with the reason.
    assert decode_sample("message_revoked_docs_bug.json") == [
        Ignored(
            reason="revoke without revokedMessageId: WAHA's before/after ids are not message "
            "ids, so the deleted message cannot be keyed",
            event="message.ack",
        )
    ]


def test_text_message_from_us_also_reports_its_ack() -> None:
    assert decode_sample("message_text.json") == [
        MessageObserved(
            key=OUR_ID,
            direction="outgoing",
            chat="11111111111@c.us",
            sender="11111111111@c.us",
            kind="text",
            text="Hi there!",
            provider_time=1667561485.0,
        ),
        StatusReported(key=OUR_ID, status="sent", raw="1"),
    ]


def test_poll_vote_and_presence_are_ignored() -> None:
    assert decode_sample("poll_vote.json") == [
        Ignored(reason="event 'poll.vote' is not folded", event="poll.vote")
    ]
    assert decode_sample("presence_update_group.json") == [
        Ignored(reason="event 'presence.update' is not folded", event="presence.update")
    ]


def test_session_working_is_connected() -> None:
    assert decode_sample("session_status_working.json") == [
        InstanceStatusReported(status="connected", raw="WORKING")
    ]


def test_samples_without_envelope_id_have_no_event_id() -> None:
    body, _ = sample("waha", "message_ack_read.json")
    assert waha.event_id(body) is None
    assert waha.event_id(b"not json") is None
    assert waha.event_id(b'{"id": 7}') is None
    assert waha.event_id(b'{"id": "  "}') is None


# --- acks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ack", "name", "canonical"),
    [
        (-1, "ERROR", "not_sent"),
        (0, "PENDING", "sending"),
        (1, "SERVER", "sent"),
        (2, "DEVICE", "delivered"),
        (3, "READ", "read"),
        (4, "PLAYED", "played"),
    ],
)
def test_every_documented_ack(ack: int, name: str, canonical: str) -> None:
    payload = {"id": "true_1@c.us_X", "fromMe": True, "ack": ack, "ackName": name}
    assert decode_obj(event("message.ack", payload)) == [
        StatusReported(key="true_1@c.us_X", status=canonical, raw=str(ack))  # type: ignore[arg-type]
    ]


def test_ack_name_alone_is_enough() -> None:
    payload = {"id": "true_1@c.us_X", "ackName": "DEVICE"}
    assert decode_obj(event("message.ack", payload)) == [
        StatusReported(key="true_1@c.us_X", status="delivered", raw="DEVICE")
    ]


def test_envelope_timestamp_in_ms_is_the_ack_time() -> None:
    payload = {"id": "true_1@c.us_X", "fromMe": True, "ack": 2}
    facts = decode_obj(event("message.ack", payload, id="evt_1", timestamp=1700000000123))
    assert facts == [
        StatusReported(
            key="true_1@c.us_X", status="delivered", raw="2", provider_time=1700000000.123
        )
    ]


def test_group_ack_event_names_the_participant() -> None:
    payload = {
        "id": "true_120363@g.us_ABC",
        "from": "120363@g.us",
        "participant": "555@c.us",
        "fromMe": True,
        "ack": 3,
        "ackName": "READ",
    }
    assert decode_obj(event("message.ack.group", payload)) == [
        StatusReported(key="true_120363@g.us_ABC", status="read", raw="3", participant="555@c.us")
    ]


def test_ack_of_incoming_message_is_our_own_receipt() -> None:
    payload = {"id": "false_1@c.us_X", "fromMe": False, "ack": 3, "ackName": "READ"}
    assert decode_obj(event("message.ack", payload)) == [
        Ignored(reason="ack 3 of an incoming message (our own receipt)", event="message.ack")
    ]
    # Without fromMe, the serialized id's prefix decides.
    payload = {"id": "false_1@c.us_X", "ack": 3}
    assert decode_obj(event("message.ack", payload)) == [
        Ignored(reason="ack 3 of an incoming message (our own receipt)", event="message.ack")
    ]


def test_unknown_ack_is_ignored() -> None:
    payload = {"id": "true_1@c.us_X", "fromMe": True, "ack": 9}
    assert decode_obj(event("message.ack", payload)) == [
        Ignored(reason="unknown ack '9'", event="message.ack")
    ]


def test_ack_without_id_or_ack_is_an_error() -> None:
    assert reason(event("message.ack", {"fromMe": True, "ack": 3})) == (
        "payload.id: missing message id"
    )
    assert reason(event("message.ack", {"id": "true_1@c.us_X", "fromMe": True})) == (
        "payload.ack: missing (and no ackName)"
    )


def test_wrong_type_in_payload_names_the_path() -> None:
    payload = {"id": "true_1@c.us_X", "ack": "three"}
    assert reason(event("message.ack", payload)) == (
        "invalid payload: Expected `int | null`, got `str` - at `$.payload.ack`"
    )


# --- revokes ----------------------------------------------------------------------------


def test_revoked_bare_id_is_reserialized_from_after() -> None:
    payload = {
        "revokedMessageId": "A06CA7BB5DD8C8F705628CDB7E3A33C9",
        "after": {"id": "false_155@c.us_REVOKEMSG", "timestamp": 1700000100, "fromMe": False},
        "before": None,
    }
    assert decode_obj(event("message.revoked", payload, timestamp=1700000200000)) == [
        MessageDeleted(
            key="false_155@c.us_A06CA7BB5DD8C8F705628CDB7E3A33C9",
            raw="revoked",
            direction="incoming",
            provider_time=1700000100.0,
        )
    ]


def test_revoked_in_group_keeps_the_participant_suffix() -> None:
    payload = {
        "revokedMessageId": "ORIG",
        "after": {"id": "true_120363@g.us_REVOKE_999@c.us", "fromMe": True},
    }
    assert decode_obj(event("message.revoked", payload, timestamp=1700000200000)) == [
        MessageDeleted(
            key="true_120363@g.us_ORIG_999@c.us",
            raw="revoked",
            direction="outgoing",
            provider_time=1700000200.0,
        )
    ]


def test_revoke_shape_sent_as_message_ack_is_a_revoke() -> None:
    payload = {"revokedMessageId": "true_1@c.us_ORIG", "after": None, "before": None}
    assert decode_obj(event("message.ack", payload)) == [
        MessageDeleted(key="true_1@c.us_ORIG", raw="revoked")
    ]


def test_revoke_with_placeholder_timestamp_is_an_error() -> None:
    payload = {"revokedMessageId": "ORIG", "after": {"id": "x", "timestamp": "some-timestamp"}}
    assert reason(event("message.revoked", payload)) == (
        "payload.after.timestamp: not a timestamp: 'some-timestamp'"
    )


# --- messages ---------------------------------------------------------------------------


def test_incoming_noweb_group_voice_reply() -> None:
    payload = {
        "id": "false_120363@g.us_3EB0_555@c.us",
        "timestamp": 1700000000,
        "from": "120363@g.us",
        "participant": "555@c.us",
        "fromMe": False,
        "body": "",
        "hasMedia": True,
        "media": {"url": "http://waha/api/files/x.oga", "mimetype": "audio/ogg; codecs=opus"},
        "ack": 2,
        "replyTo": {"id": "QUOTED1", "participant": "999@c.us", "body": "question?"},
        "_data": {"message": {"audioMessage": {"ptt": True, "seconds": 3}}},
    }
    assert decode_obj(event("message", payload, me={"id": "999@c.us"})) == [
        MessageObserved(
            key="false_120363@g.us_3EB0_555@c.us",
            direction="incoming",
            chat="120363@g.us",
            sender="555@c.us",
            kind="voice",
            media="http://waha/api/files/x.oga",
            quoted="QUOTED1",
            provider_time=1700000000.0,
        )
    ]


def test_message_any_from_us_uses_me_as_sender() -> None:
    payload = {
        "id": "true_155@c.us_OUT",
        "timestamp": 1700000000,
        "from": "155@c.us",
        "fromMe": True,
        "body": "hello",
        "ack": 0,
    }
    assert decode_obj(event("message.any", payload, me={"id": "999@c.us"})) == [
        MessageObserved(
            key="true_155@c.us_OUT",
            direction="outgoing",
            chat="155@c.us",
            sender="999@c.us",
            kind="text",
            text="hello",
            provider_time=1700000000.0,
        ),
        StatusReported(key="true_155@c.us_OUT", status="sending", raw="0"),
    ]


def test_reaction_event() -> None:
    payload = {
        "id": "false_155@c.us_R1",
        "timestamp": 1700000000,
        "from": "155@c.us",
        "fromMe": False,
        "reaction": {"text": "👍", "messageId": "true_155@c.us_OUT"},
    }
    assert decode_obj(event("message.reaction", payload)) == [
        MessageObserved(
            key="false_155@c.us_R1",
            direction="incoming",
            chat="155@c.us",
            sender="155@c.us",
            kind="reaction",
            text="👍",
            quoted="true_155@c.us_OUT",
            provider_time=1700000000.0,
        )
    ]


def test_message_without_id_is_an_error() -> None:
    assert reason(event("message", {"from": "1@c.us", "body": "x"})) == (
        "payload.id: missing message id"
    )
    assert reason(event("message", None)) == "payload: missing"


# --- sessions and unknown events --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("STOPPED", "stopped"),
        ("STARTING", "starting"),
        ("SCAN_QR_CODE", "qr_required"),
        ("WORKING", "connected"),
        ("FAILED", "failed"),
        ("SOMETHING_NEW", "unknown"),
    ],
)
def test_session_status(raw: str, canonical: str) -> None:
    facts = decode_obj(event("session.status", {"name": "default", "status": raw}))
    assert facts == [InstanceStatusReported(status=canonical, raw=raw)]  # type: ignore[arg-type]


def test_session_status_without_status_is_an_error() -> None:
    assert reason(event("session.status", {})) == "payload.status: missing session status"


def test_unknown_event_is_ignored_and_missing_event_is_an_error() -> None:
    assert decode_obj(event("call.received", {"id": "c1"})) == [
        Ignored(reason="event 'call.received' is not folded", event="call.received")
    ]
    assert reason({"session": "default", "payload": {}}) == "event: missing event name"


def test_not_json_is_an_error() -> None:
    with pytest.raises(DecodeError) as info:
        waha.decode(b"\xff", JSON, {})
    assert info.value.reason.startswith("body is not valid JSON")


# --- in-repo fixtures (tests/fixtures/waha, sources in tests/fixtures/SOURCES.md) -----------


def test_fixture_set_is_the_one_these_tests_cover() -> None:
    assert fixture_names("waha") == [
        "session_status_failed.json",
        "v2022_message_ack.json",
        "v2023_state_change_noweb_close_401.json",
        "v2023_state_change_webjs_unpaired.json",
    ]


def test_failed_session_needs_a_restart_not_a_wait() -> None:
    """WAHA docs: FAILED — restart the session, and if that does not help, log out and start."""
    assert decode_sample("session_status_failed.json") == [
        InstanceStatusReported(status="failed", raw="FAILED")
    ]


def test_2022_envelope_without_session_or_me_reads_the_ack() -> None:
    """WAHA 2022.x posted ``{event, payload}`` only; the ack payload is the whole message."""
    assert decode_sample("v2022_message_ack.json") == [
        StatusReported(
            key="true_11111111111@c.us_3EB0C0A1B2C3D4E5F6A7", status="delivered", raw="2"
        )
    ]


def test_2023_webjs_state_change_is_the_wastate_string() -> None:
    assert decode_sample("v2023_state_change_webjs_unpaired.json") == [
        InstanceStatusReported(status="logged_out", raw="UNPAIRED")
    ]


def test_2023_noweb_state_change_is_the_baileys_connection_update() -> None:
    assert decode_sample("v2023_state_change_noweb_close_401.json") == [
        InstanceStatusReported(status="logged_out", raw="close", reason="statusCode 401")
    ]


@pytest.mark.parametrize(
    ("payload", "status", "raw"),
    [
        ("CONNECTED", "connected", "CONNECTED"),
        ("OPENING", "starting", "OPENING"),
        ("CONFLICT", "disconnected", "CONFLICT"),
        ("TOS_BLOCK", "banned", "TOS_BLOCK"),
        ("DEPRECATED_VERSION", "failed", "DEPRECATED_VERSION"),
        ("SOMETHING_NEW", "unknown", "SOMETHING_NEW"),
        ({"connection": "open"}, "connected", "open"),
        ({"connection": "connecting"}, "starting", "connecting"),
        ({"qr": "2@abc"}, "qr_required", "qr"),
    ],
)
def test_state_change_values(payload: Any, status: str, raw: str) -> None:
    facts = decode_obj(event("state.change", payload))
    assert facts == [InstanceStatusReported(status=status, raw=raw)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status"), [(403, "banned"), (428, "disconnected"), (515, "disconnected")]
)
def test_state_change_close_reasons(code: int, status: str) -> None:
    payload = {"connection": "close", "lastDisconnect": {"error": {"output": {"statusCode": code}}}}
    assert decode_obj(event("state.change", payload)) == [
        InstanceStatusReported(status=status, raw="close", reason=f"statusCode {code}")  # type: ignore[arg-type]
    ]


def test_state_change_without_connection_is_ignored_and_empty_is_an_error() -> None:
    assert decode_obj(event("state.change", {"receivedPendingNotifications": True})) == [
        Ignored(reason="state.change without connection or qr", event="state.change")
    ]
    assert DECODING.reason(event("state.change", " ")) == "payload: empty state"
