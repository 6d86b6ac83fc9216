"""Evolution API decoder: every published sample, then the documented traps."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from projections.facts import (
    Ignored,
    InstanceStatusReported,
    MessageDeleted,
    MessageObserved,
    StatusReported,
)
from projections.providers import evolution
from tests.support.decode_helpers import Decoding
from tests.support.samples import fixture_names, sample, sample_names

OWN = "59169375664@s.whatsapp.net"
PEER = "59171146267@s.whatsapp.net"
DATE_TIME = "2025-05-01T18:10:23.112Z"


def iso(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


DECODING = Decoding("evolution", evolution.decode)
decode_sample = DECODING.sample
decode_obj = DECODING.json
reason = DECODING.reason


def envelope(event: str, data: Any) -> dict[str, Any]:
    return {
        "event": event,
        "instance": "tigo1",
        "data": data,
        "destination": "https://example.com/hook",
        "date_time": DATE_TIME,
        "sender": OWN,
        "server_url": "http://localhost:8080",
        "apikey": "<redacted>",
    }


def update(status: Any, from_me: bool | None = True, **extra: Any) -> dict[str, Any]:
    data = {"keyId": "3EB0AAA", "remoteJid": PEER, "participant": None, "status": status}
    if from_me is not None:
        data["fromMe"] = from_me
    return {**data, "instanceId": "af6c", "messageId": "cm9internal", **extra}


def upsert(message: dict[str, Any], from_me: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "key": {"remoteJid": PEER, "fromMe": from_me, "id": "3EB0OUT"},
        "pushName": "X",
        "message": message,
        "messageTimestamp": 1746133821,
        **extra,
    }


# --- every sample file ------------------------------------------------------------------


def test_sample_set_is_the_one_these_tests_cover() -> None:
    assert sample_names("evolution") == [
        "CONSTRUCTED_messages_update_delivery_ack.json",
        "connection_update_close_401.json",
        "messages_upsert_incoming_image.json",
        "messages_upsert_incoming_text.json",
        "messages_upsert_outgoing_text.json",
    ]


def test_fixture_set_is_the_one_these_tests_cover() -> None:
    assert fixture_names("evolution") == [
        "connection_update_close_403.json",
        "v1_cloud_messages_update_delivered.json",
        "v1_messages_update_delivery_ack.json",
        "v1_status_instance_closed.json",
        "v2_cloud_messages_update_failed.json",
        "v2_status_instance_closed_406.json",
    ]


def test_status_instance_closed_is_evolution_giving_up() -> None:
    """v1 sends ``closed`` only after a loggedOut close; v2 adds the code it will not retry."""
    assert decode_sample("v1_status_instance_closed.json") == [
        InstanceStatusReported(
            status="logged_out", raw="closed", provider_time=iso("2024-05-01T14:10:23.112Z")
        )
    ]
    assert decode_sample("v2_status_instance_closed_406.json") == [
        InstanceStatusReported(
            status="stopped",
            raw="closed",
            reason="disconnectionReasonCode 406",
            provider_time=iso("2025-05-01T18:10:23.112Z"),
        )
    ]


@pytest.mark.parametrize(
    ("code", "status"), [(401, "logged_out"), (403, "banned"), (402, "stopped")]
)
def test_status_instance_closed_codes(code: int, status: str) -> None:
    data = {"instance": "tigo1", "status": "closed", "disconnectionReasonCode": code}
    [fact] = decode_obj(envelope("STATUS_INSTANCE", data))
    assert isinstance(fact, InstanceStatusReported) and fact.status == status


def test_status_instance_created_is_not_a_state() -> None:
    assert decode_obj(envelope("status.instance", {"instance": "tigo1", "status": "created"})) == [
        Ignored(
            reason="status.instance 'created' is not a connection state", event="status.instance"
        )
    ]


# --- version history (tests/fixtures/evolution, sources in tests/fixtures/SOURCES.md) --------


def test_v1_update_is_keyed_by_the_spread_baileys_key() -> None:
    """v1.x ``messages.update``: ``{...key, status, datetime, owner}`` — no keyId, no key."""
    assert decode_sample("v1_messages_update_delivery_ack.json") == [
        StatusReported(
            key="BAE5F5A632EAE722",
            status="delivered",
            raw="DELIVERY_ACK",
            provider_time=1714582223.112,
        )
    ]


def test_v1_update_of_an_incoming_message_is_still_our_receipt() -> None:
    data = {"remoteJid": PEER, "fromMe": False, "id": "BAE5IN", "status": "READ", "owner": "t"}
    assert decode_obj(envelope("messages.update", data)) == [
        Ignored(
            reason="status READ of an incoming message (our own receipt)", event="messages.update"
        )
    ]


def test_v1_update_without_status_is_ignored_not_quarantined() -> None:
    """v1 emits ``status: status[update.status]`` — undefined (dropped from JSON) for edits."""
    data = {"remoteJid": PEER, "fromMe": True, "id": "BAE5EDIT", "datetime": 1714582223112}
    assert decode_obj(envelope("messages.update", data)) == [
        Ignored(reason="update without status for message BAE5EDIT", event="messages.update")
    ]


def test_key_id_wins_over_a_spread_id() -> None:
    data = {**update("READ"), "id": "OTHER"}
    assert [f.key for f in decode_obj(envelope("messages.update", data))] == ["3EB0AAA"]  # type: ignore[union-attr]


def test_cloud_channel_statuses_are_ours_despite_from_me_false() -> None:
    """The Cloud channel compares a JID with phone_number_id: fromMe is always false."""
    wamid = "wamid.HBgLNTkxNzExNDYyNjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"
    assert decode_sample("v1_cloud_messages_update_delivered.json") == [
        StatusReported(key=wamid, status="delivered", raw="DELIVERED", provider_time=1714582223.112)
    ]
    assert decode_sample("v2_cloud_messages_update_failed.json") == [
        StatusReported(
            key=wamid,
            status="not_sent",
            raw="FAILED",
            provider_time=iso("2025-05-01T18:10:23.112Z"),
        )
    ]


def test_close_403_is_a_ban() -> None:
    assert decode_sample("connection_update_close_403.json") == [
        InstanceStatusReported(
            status="banned",
            raw="close",
            reason="statusReason 403",
            provider_time=iso("2025-05-01T18:10:23.112Z"),
        )
    ]


def test_delivery_ack_is_keyed_by_key_id_not_the_database_id() -> None:
    assert decode_sample("CONSTRUCTED_messages_update_delivery_ack.json") == [
        StatusReported(
            key="3EB0B7AA9746D9215C1340",
            status="delivered",
            raw="DELIVERY_ACK",
            provider_time=iso("2025-05-01T18:10:23.112Z"),
        )
    ]


def test_close_with_401_is_logged_out() -> None:
    assert decode_sample("connection_update_close_401.json") == [
        InstanceStatusReported(
            status="logged_out",
            raw="close",
            reason="statusReason 401",
            provider_time=iso("2025-05-02T03:01:20.092Z"),
        )
    ]


def test_incoming_image_with_caption() -> None:
    assert decode_sample("messages_upsert_incoming_image.json") == [
        MessageObserved(
            key="3EB083096BF5E4096E4137",
            direction="incoming",
            chat=PEER,
            sender=PEER,
            kind="image",
            text="hola - text con multimedia (imagen)",
            media="https://mmg.whatsapp.net/o1/v/t62.7118-24/f2/m238/AQPnw3VpmxWhEi-XMtGpfrTyULu0"
            "ziRO-J1OO-kQIA-0Ne5NMOAQPE6160Bn5z8lie4xdaak9UzPFYMmeKwgm2ZJ5spYFrd2vaab_m67uQ?ccb=9-4"
            "&oh=01_Q5AaIR7L3lYtMrU7ISCIBeFODRarILnUkReVQnandbZ5O_wh&oe=681ACB1E&_nc_sid=e6ed6c"
            "&mms3=true",
            provider_time=1746132796.0,
        )
    ]


def test_incoming_text() -> None:
    assert decode_sample("messages_upsert_incoming_text.json") == [
        MessageObserved(
            key="3EB03E3CA617ADA52AEA79",
            direction="incoming",
            chat=PEER,
            sender=PEER,
            kind="text",
            text="hola - text",
            provider_time=1746132673.0,
        )
    ]


def test_outgoing_text_without_status_is_only_observed() -> None:
    assert decode_sample("messages_upsert_outgoing_text.json") == [
        MessageObserved(
            key="3EB0B7AA9746D9215C1340",
            direction="outgoing",
            chat=PEER,
            sender=OWN,
            kind="text",
            text="menasje saliente solo texto",
            provider_time=1746133821.0,
        )
    ]


# --- event names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "messages_upsert_incoming_text.json",
        "CONSTRUCTED_messages_update_delivery_ack.json",
        "connection_update_close_401.json",
    ],
)
def test_upper_underscore_event_names_decode_alike(name: str) -> None:
    body, _ = sample("evolution", name)
    payload = json.loads(body)
    dotted = decode_obj(payload)
    payload["event"] = payload["event"].upper().replace(".", "_")
    assert decode_obj(payload) == dotted


# --- statuses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("ERROR", "not_sent"),
        ("PENDING", "sending"),
        ("SERVER_ACK", "sent"),
        ("DELIVERY_ACK", "delivered"),
        ("READ", "read"),
        ("PLAYED", "played"),
        (0, "not_sent"),
        (1, "sending"),
        (2, "sent"),
        (3, "delivered"),
        (4, "read"),
        (5, "played"),
        ("SENT", "sent"),
        ("DELIVERED", "delivered"),
        ("FAILED", "not_sent"),
    ],
)
def test_every_status_value(raw: Any, canonical: str) -> None:
    assert decode_obj(envelope("messages.update", update(raw))) == [
        StatusReported(key="3EB0AAA", status=canonical, raw=str(raw), provider_time=iso(DATE_TIME))  # type: ignore[arg-type]
    ]


def test_datetime_in_ms_wins_over_the_envelope_time() -> None:
    data = update("READ", datetime=1746123000000)
    assert decode_obj(envelope("messages.update", data)) == [
        StatusReported(key="3EB0AAA", status="read", raw="READ", provider_time=1746123000.0)
    ]


def test_status_of_an_incoming_message_is_our_receipt() -> None:
    assert decode_obj(envelope("messages.update", update("READ", from_me=False))) == [
        Ignored(
            reason="status READ of an incoming message (our own receipt)", event="messages.update"
        )
    ]


def test_update_without_from_me_is_taken_as_ours() -> None:
    assert decode_obj(envelope("messages.update", update("SERVER_ACK", from_me=None))) == [
        StatusReported(key="3EB0AAA", status="sent", raw="SERVER_ACK", provider_time=iso(DATE_TIME))
    ]


@pytest.mark.parametrize(("from_me", "direction"), [(True, "outgoing"), (False, "incoming")])
def test_deleted_status_is_a_deletion_either_way(from_me: bool, direction: str) -> None:
    assert decode_obj(envelope("messages.update", update("DELETED", from_me=from_me))) == [
        MessageDeleted(
            key="3EB0AAA",
            raw="DELETED",
            direction=direction,  # type: ignore[arg-type]
            provider_time=iso(DATE_TIME),
        )
    ]


def test_update_without_status_is_ignored() -> None:
    data = update(None, pollUpdates=[{"name": "Yes", "voters": ["1"]}])
    del data["status"]
    assert decode_obj(envelope("messages.update", data)) == [
        Ignored(reason="poll vote for message 3EB0AAA", event="messages.update")
    ]


def test_participant_is_reported_only_when_it_is_someone_else() -> None:
    same = update("READ", participant=PEER)
    assert decode_obj(envelope("messages.update", same)) == [
        StatusReported(key="3EB0AAA", status="read", raw="READ", provider_time=iso(DATE_TIME))
    ]
    group = update("READ", remoteJid="120363@g.us", participant="555@s.whatsapp.net")
    assert decode_obj(envelope("messages.update", group)) == [
        StatusReported(
            key="3EB0AAA",
            status="read",
            raw="READ",
            provider_time=iso(DATE_TIME),
            participant="555@s.whatsapp.net",
        )
    ]


def test_unknown_status_is_ignored() -> None:
    assert decode_obj(envelope("messages.update", update("EDITED"))) == [
        Ignored(reason="unknown status 'EDITED'", event="messages.update")
    ]


def test_update_without_key_id_is_an_error() -> None:
    data = update("READ")
    del data["keyId"]
    assert reason(envelope("messages.update", data)) == "data.keyId: missing message id"


# --- upserts ----------------------------------------------------------------------------


def test_outgoing_upsert_with_status_reports_it_too() -> None:
    data = upsert({"conversation": "hi"}, status="SERVER_ACK")
    assert decode_obj(envelope("send.message", data)) == [
        MessageObserved(
            key="3EB0OUT",
            direction="outgoing",
            chat=PEER,
            sender=OWN,
            kind="text",
            text="hi",
            provider_time=1746133821.0,
        ),
        StatusReported(
            key="3EB0OUT", status="sent", raw="SERVER_ACK", provider_time=iso(DATE_TIME)
        ),
    ]


def test_incoming_upsert_status_is_not_reported() -> None:
    data = upsert({"conversation": "hi"}, from_me=False, status="DELIVERY_ACK")
    assert decode_obj(envelope("messages.upsert", data)) == [
        MessageObserved(
            key="3EB0OUT",
            direction="incoming",
            chat=PEER,
            sender=PEER,
            kind="text",
            text="hi",
            provider_time=1746133821.0,
        )
    ]


def test_group_voice_note_reply_with_long_timestamp() -> None:
    data = {
        "key": {
            "remoteJid": "120363@g.us",
            "fromMe": False,
            "id": "3EB0VOICE",
            "participant": "555@s.whatsapp.net",
        },
        "message": {
            "audioMessage": {
                "url": "https://mmg.whatsapp.net/v/voice.enc",
                "ptt": True,
                "contextInfo": {"stanzaId": "3EB0QUESTION"},
            }
        },
        "messageTimestamp": {"low": 1746133821, "high": 0, "unsigned": True},
    }
    assert decode_obj(envelope("messages.upsert", data)) == [
        MessageObserved(
            key="3EB0VOICE",
            direction="incoming",
            chat="120363@g.us",
            sender="555@s.whatsapp.net",
            kind="voice",
            media="https://mmg.whatsapp.net/v/voice.enc",
            quoted="3EB0QUESTION",
            provider_time=1746133821.0,
        )
    ]


def test_reaction_quotes_the_reacted_message() -> None:
    data = upsert(
        {"reactionMessage": {"key": {"id": "3EB0TARGET"}, "text": "❤"}},
        from_me=False,
        messageType="reactionMessage",
    )
    assert decode_obj(envelope("messages.upsert", data)) == [
        MessageObserved(
            key="3EB0OUT",
            direction="incoming",
            chat=PEER,
            sender=PEER,
            kind="reaction",
            text="❤",
            quoted="3EB0TARGET",
            provider_time=1746133821.0,
        )
    ]


def test_upsert_array_yields_every_message() -> None:
    first = upsert({"conversation": "a"}, from_me=False)
    second = {**upsert({"extendedTextMessage": {"text": "b"}}, from_me=False)}
    second["key"] = {**second["key"], "id": "3EB0SECOND"}
    facts = decode_obj(envelope("MESSAGES_UPSERT", [first, second]))
    assert [f.key for f in facts if isinstance(f, MessageObserved)] == ["3EB0OUT", "3EB0SECOND"]
    assert [f.text for f in facts if isinstance(f, MessageObserved)] == ["a", "b"]


def test_revoke_protocol_message_deletes_the_target() -> None:
    data = upsert({"protocolMessage": {"key": {"id": "3EB0GONE"}, "type": "REVOKE"}}, from_me=False)
    assert decode_obj(envelope("messages.upsert", data)) == [
        MessageDeleted(
            key="3EB0GONE", raw="REVOKE", direction="incoming", provider_time=1746133821.0
        )
    ]


def test_other_protocol_messages_are_ignored() -> None:
    data = upsert({"protocolMessage": {"type": 3}})
    assert decode_obj(envelope("messages.upsert", data)) == [
        Ignored(reason="protocolMessage of type 3, not a revoke", event="messages.upsert")
    ]


def test_upsert_without_key_id_names_the_field() -> None:
    data = upsert({"conversation": "x"})
    del data["key"]["id"]
    assert reason(envelope("messages.upsert", data)) == "data.key.id: missing message id"
    data = upsert({"conversation": "x"})
    del data["key"]["fromMe"]
    assert reason(envelope("messages.upsert", data)) == (
        "data.key.fromMe: missing (direction unknown)"
    )


def test_wrong_type_names_the_path_inside_data() -> None:
    data = upsert({"conversation": 5})
    assert reason(envelope("messages.upsert", data)) == (
        "invalid payload: Expected `str | null`, got `int` - at `$.data.message.conversation`"
    )


# --- deletions and instance status ------------------------------------------------------


def test_messages_delete_carries_the_key() -> None:
    data = {"remoteJid": PEER, "fromMe": True, "id": "3EB0DEL"}
    assert decode_obj(envelope("MESSAGES_DELETE", data)) == [
        MessageDeleted(
            key="3EB0DEL",
            raw="messages.delete",
            direction="outgoing",
            provider_time=iso(DATE_TIME),
        )
    ]


@pytest.mark.parametrize(
    ("state", "status_reason", "canonical"),
    [
        ("open", 200, "connected"),
        ("connecting", None, "starting"),
        ("close", 428, "disconnected"),
        ("close", "401", "logged_out"),
        ("close", 403, "banned"),
        ("close", 440, "disconnected"),
        ("close", 515, "disconnected"),
        ("refused", 428, "stopped"),
        ("paused", None, "unknown"),
    ],
)
def test_connection_states(state: str, status_reason: Any, canonical: str) -> None:
    data: dict[str, Any] = {"instance": "tigo1", "state": state}
    if status_reason is not None:
        data["statusReason"] = status_reason
    reason_text = None if status_reason is None else f"statusReason {status_reason}"
    assert decode_obj(envelope("connection.update", data)) == [
        InstanceStatusReported(
            status=canonical,  # type: ignore[arg-type]
            raw=state,
            reason=reason_text,
            provider_time=iso(DATE_TIME),
        )
    ]


def test_connection_without_state_is_an_error() -> None:
    assert reason(envelope("connection.update", {"instance": "tigo1"})) == (
        "data.state: missing connection state"
    )


def test_qrcode_updated_means_a_scan_is_required() -> None:
    data = {"qrcode": {"instance": "tigo1", "code": "2@abc", "base64": "data:image/png;base64,"}}
    assert decode_obj(envelope("QRCODE_UPDATED", data)) == [
        InstanceStatusReported(
            status="qr_required", raw="qrcode.updated", provider_time=iso(DATE_TIME)
        )
    ]
    limit = {"message": "QR code limit reached, please login again", "statusCode": 500}
    assert decode_obj(envelope("qrcode.updated", limit)) == [
        Ignored(
            reason="qrcode.updated without a QR code: QR code limit reached, please login again",
            event="qrcode.updated",
        )
    ]


def test_history_sync_and_unknown_events_are_ignored() -> None:
    assert decode_obj(envelope("MESSAGES_SET", [upsert({"conversation": "old"})])) == [
        Ignored(reason="event 'messages.set' is not folded", event="messages.set")
    ]
    assert decode_obj(envelope("presence.update", {"id": PEER, "presences": {}})) == [
        Ignored(reason="event 'presence.update' is not folded", event="presence.update")
    ]


def test_missing_event_or_data_is_an_error() -> None:
    assert reason({"instance": "tigo1", "data": {}}) == "event: missing event name"
    assert reason({"event": "messages.update", "instance": "tigo1"}) == "data: missing"


def test_evolution_has_no_event_id() -> None:
    assert not hasattr(evolution, "event_id")
