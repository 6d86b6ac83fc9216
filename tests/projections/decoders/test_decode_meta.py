"""Meta WhatsApp Cloud API decoder: every published sample, then the documented traps."""

from __future__ import annotations

from typing import Any

import pytest

from projections.facts import DecodeError, Ignored, MessageDeleted, MessageObserved, StatusReported
from projections.providers import meta
from tests.support.decode_helpers import Decoding
from tests.support.samples import JSON, fixture_names, sample_names

DECODING = Decoding("meta", meta.decode)
decode_sample = DECODING.sample
decode_obj = DECODING.json
reason = DECODING.reason


def hook(*values: dict[str, Any], field: str = "messages") -> dict[str, Any]:
    """A webhook with one entry holding one change per value."""
    changes = [{"value": {"messaging_product": "whatsapp", **v}, "field": field} for v in values]
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": changes}]}


#: the customer every synthetic status goes to (Meta's recipient_id: the chat)
TO = "15550001"


def status(id_: str, status_: str, ts: str = "1700000000", **extra: Any) -> dict[str, Any]:
    return {"id": id_, "status": status_, "timestamp": ts, "recipient_id": TO, **extra}


# --- every sample file ------------------------------------------------------------------


def test_sample_set_is_the_one_these_tests_cover() -> None:
    assert sample_names("meta") == [
        "CONSTRUCTED_batch_three_statuses_out_of_order.json",
        "batch_two_identical_messages.json",
        "echo_revoke_outgoing.json",
        "errors_out_of_band.json",
        "message_group_text.json",
        "message_image.json",
        "message_reaction.json",
        "message_reply_context.json",
        "message_revoke_incoming_deleted.json",
        "message_text_docs.json",
        "message_voice.json",
        "status_deleted_onprem_legacy.json",
        "status_delivered.json",
        "status_failed_130472.json",
        "status_failed_131014.json",
        "status_group_read.json",
        "status_played.json",
        "status_read.json",
        "status_sent.json",
        "status_sent_courier.json",
        "status_sent_with_biz_opaque_callback_data.json",
    ]


def test_batch_of_three_statuses_keeps_every_element_in_payload_order() -> None:
    # read arrives first and carries an earlier timestamp than sent: no reordering here.
    assert decode_sample("CONSTRUCTED_batch_three_statuses_out_of_order.json") == [
        StatusReported(
            key="wamid.xyzxyz",
            status="read",
            raw="read",
            provider_time=1689380458.0,
            chat="972987654321",
        ),
        StatusReported(
            key="wamid.xyzxyz",
            status="delivered",
            raw="delivered",
            provider_time=1698266945.0,
            chat="972987654321",
        ),
        StatusReported(
            key="wamid.xyzxyz",
            status="sent",
            raw="sent",
            provider_time=1698266945.0,
            chat="972987654321",
        ),
    ]


def test_two_identical_messages_in_one_post_are_both_reported() -> None:
    observed = MessageObserved(
        key="external_id",
        direction="incoming",
        chat="5678",
        sender="5678",
        kind="text",
        text="Hello World",
        provider_time=1454119029.0,
    )
    assert decode_sample("batch_two_identical_messages.json") == [observed, observed]


def test_echo_revoke_deletes_our_message() -> None:
    assert decode_sample("echo_revoke_outgoing.json") == [
        MessageDeleted(
            key="wamid.zzzzzz", raw="revoke", direction="outgoing", provider_time=1697044968.0
        )
    ]


def test_out_of_band_error_is_ignored_with_its_code() -> None:
    assert decode_sample("errors_out_of_band.json") == [
        Ignored(
            reason="out-of-band error without a message id: 0: "
            "We were unable to authenticate the app user",
            event="errors",
        )
    ]


def test_group_message_is_keyed_to_the_group_chat() -> None:
    assert decode_sample("message_group_text.json") == [
        MessageObserved(
            key="external_id",
            direction="incoming",
            chat="555555555",
            sender="5678",
            kind="text",
            text="Hello World, group message",
            provider_time=1454119029.0,
        )
    ]


def test_image_media_is_the_media_id() -> None:
    assert decode_sample("message_image.json") == [
        MessageObserved(
            key="wamid.xyzxyz",
            direction="incoming",
            chat="972987654321",
            sender="972987654321",
            kind="image",
            media="65463453",
            provider_time=1697043379.0,
        )
    ]


def test_reaction_points_at_the_reacted_message() -> None:
    assert decode_sample("message_reaction.json") == [
        MessageObserved(
            key="wamid.xyzxyz",
            direction="incoming",
            chat="972987654321",
            sender="972987654321",
            kind="reaction",
            text="😮",
            quoted="wamid.yzxyzx=",
            provider_time=1697044456.0,
        )
    ]


def test_reply_quotes_context_id() -> None:
    assert decode_sample("message_reply_context.json") == [
        MessageObserved(
            key="wamid.xyzxyz",
            direction="incoming",
            chat="972987654321",
            sender="972987654321",
            kind="text",
            text="replied text",
            quoted="wamid.xyzxyz==",
            provider_time=1697044746.0,
        )
    ]


def test_incoming_revoke_deletes_the_original_message() -> None:
    assert decode_sample("message_revoke_incoming_deleted.json") == [
        MessageDeleted(
            key="<ORIGINAL_WHATSAPP_MESSAGE_ID>",
            raw="revoke",
            direction="incoming",
            provider_time=1697043223.0,
        )
    ]


def test_docs_text_message() -> None:
    assert decode_sample("message_text_docs.json") == [
        MessageObserved(
            key="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
            direction="incoming",
            chat="16505551234",
            sender="16505551234",
            kind="text",
            text="Does it come in another color?",
            provider_time=1749416383.0,
        )
    ]


def test_audio_with_voice_flag_is_a_voice_note() -> None:
    assert decode_sample("message_voice.json") == [
        MessageObserved(
            key="wamid.xyzxyz",
            direction="incoming",
            chat="972987654321",
            sender="972987654321",
            kind="voice",
            media="1234567890987654321",
            provider_time=1697043473.0,
        )
    ]


def test_legacy_deleted_status_is_a_deletion_of_our_message() -> None:
    assert decode_sample("status_deleted_onprem_legacy.json") == [
        MessageDeleted(
            key="external_id", raw="deleted", direction="outgoing", provider_time=1454119029.0
        )
    ]


@pytest.mark.parametrize(
    ("name", "raw", "canonical", "when"),
    [
        ("status_delivered.json", "delivered", "delivered", 1698266945.0),
        ("status_read.json", "read", "read", 1689380458.0),
        ("status_played.json", "played", "played", 1689380458.0),
        ("status_sent.json", "sent", "sent", 1698266945.0),
        ("status_sent_with_biz_opaque_callback_data.json", "sent", "sent", 1698266945.0),
    ],
)
def test_pywa_status_samples(name: str, raw: str, canonical: str, when: float) -> None:
    assert decode_sample(name) == [
        StatusReported(
            key="wamid.xyzxyz", status=canonical, raw=raw, provider_time=when, chat="972987654321"
        )  # type: ignore[arg-type]
    ]


def test_courier_sent_status_with_numeric_expiration_timestamp() -> None:
    assert decode_sample("status_sent_courier.json") == [
        StatusReported(
            key="external_id", status="sent", raw="sent", provider_time=1454119029.0, chat="5678"
        )
    ]


def test_failed_status_carries_code_title_message_and_details() -> None:
    assert decode_sample("status_failed_130472.json") == [
        StatusReported(
            key="wamid.xyzxyz",
            status="not_sent",
            raw="failed",
            provider_time=1689380458.0,
            error_code="130472",
            error_text="User's number is part of an experiment: Failed to send message because "
            "this user's phone number is part of an experiment",
            chat="972987654321",
        )
    ]


def test_failed_status_with_title_only() -> None:
    assert decode_sample("status_failed_131014.json") == [
        StatusReported(
            key="external_id",
            status="not_sent",
            raw="failed",
            provider_time=1454119029.0,
            error_code="131014",
            error_text="Request for url https://URL.jpg failed with error: 404 (Not Found)",
            chat="5678",
        )
    ]


def test_group_receipt_names_the_participant() -> None:
    assert decode_sample("status_group_read.json") == [
        StatusReported(
            key="<WHATSAPP_MESSAGE_ID>",
            status="read",
            raw="read",
            provider_time=1698266945.0,
            participant="<GROUP_PARTICIPANT_USER_PHONE_NUMBER>",
            chat="fowefinoewcnw",  # a group receipt names the group
        )
    ]


# --- batching ---------------------------------------------------------------------------


def test_every_entry_change_and_array_is_decoded() -> None:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "A",
                "changes": [
                    {"field": "messages", "value": {"statuses": [status("m1", "sent")]}},
                    {"field": "messages", "value": {"statuses": [status("m2", "delivered")]}},
                ],
            },
            {
                "id": "B",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "statuses": [status("m3", "read")],
                            "messages": [
                                {
                                    "from": "155",
                                    "id": "in1",
                                    "timestamp": "1700000001",
                                    "type": "text",
                                    "text": {"body": "hi"},
                                }
                            ],
                        },
                    }
                ],
            },
        ],
    }
    assert decode_obj(payload) == [
        StatusReported(key="m1", status="sent", raw="sent", provider_time=1700000000.0, chat=TO),
        StatusReported(
            key="m2", status="delivered", raw="delivered", provider_time=1700000000.0, chat=TO
        ),
        StatusReported(key="m3", status="read", raw="read", provider_time=1700000000.0, chat=TO),
        MessageObserved(
            key="in1",
            direction="incoming",
            chat="155",
            sender="155",
            text="hi",
            provider_time=1700000001.0,
        ),
    ]


# --- edge cases -------------------------------------------------------------------------


def test_failed_without_errors_has_no_error_detail() -> None:
    assert decode_obj(hook({"statuses": [status("m1", "failed")]})) == [
        StatusReported(
            key="m1", status="not_sent", raw="failed", provider_time=1700000000.0, chat=TO
        )
    ]


def test_unknown_status_value_is_ignored_not_an_error() -> None:
    assert decode_obj(hook({"statuses": [status("m1", "warning")]})) == [
        Ignored(
            reason="entry[0].changes[0].value.statuses[0].status 'warning' is not a known status",
            event="statuses",
        )
    ]


def test_other_change_fields_are_ignored() -> None:
    payload = hook({"event": "FLAGGED"}, field="account_update")
    assert decode_obj(payload) == [
        Ignored(reason="change field 'account_update' is not folded", event="account_update")
    ]


def test_other_objects_are_ignored() -> None:
    assert decode_obj({"object": "page", "entry": []}) == [
        Ignored(reason="object 'page' is not 'whatsapp_business_account'", event="page")
    ]


def test_business_app_echo_is_our_outgoing_message() -> None:
    echo = {
        "from": "15550783881",
        "to": "16505551234",
        "id": "wamid.ECHO",
        "timestamp": "1700000000",
        "type": "text",
        "text": {"body": "sent from the app"},
    }
    payload = hook({"message_echoes": [echo]}, field="smb_message_echoes")
    assert decode_obj(payload) == [
        MessageObserved(
            key="wamid.ECHO",
            direction="outgoing",
            chat="16505551234",
            sender="15550783881",
            text="sent from the app",
            provider_time=1700000000.0,
        )
    ]


def test_button_reply_is_other_with_the_tapped_title() -> None:
    message = {
        "from": "155",
        "id": "wamid.BTN",
        "timestamp": "1700000000",
        "type": "interactive",
        "context": {"from": "999", "id": "wamid.ASK"},
        "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}},
    }
    assert decode_obj(hook({"messages": [message]})) == [
        MessageObserved(
            key="wamid.BTN",
            direction="incoming",
            chat="155",
            sender="155",
            kind="other",
            text="Yes",
            quoted="wamid.ASK",
            provider_time=1700000000.0,
        )
    ]


def test_edit_is_ignored() -> None:
    message = {
        "from": "155",
        "id": "wamid.EDIT",
        "timestamp": "1700000000",
        "type": "edit",
        "edit": {"original_message_id": "wamid.ORIG", "message": {"type": "text"}},
    }
    assert decode_obj(hook({"messages": [message]})) == [
        Ignored(reason="message edit (acklog tracks delivery, not content)", event="edit")
    ]


def test_change_without_content_is_ignored() -> None:
    assert decode_obj(hook({"metadata": {"phone_number_id": "1"}})) == [
        Ignored(reason="change carries no statuses, messages or errors", event="messages")
    ]


def test_missing_status_id_names_the_field() -> None:
    payload = hook({"statuses": [{"status": "sent", "timestamp": "1700000000"}]})
    assert reason(payload) == "entry[0].changes[0].value.statuses[0].id: missing message id"


def test_missing_message_id_names_the_field() -> None:
    payload = hook({"messages": [{"from": "1", "type": "text", "text": {"body": "x"}}]})
    assert reason(payload) == "entry[0].changes[0].value.messages[0].id: missing message id"


def test_revoke_without_original_id_names_the_field() -> None:
    payload = hook({"messages": [{"from": "1", "id": "w", "type": "revoke", "revoke": {}}]})
    assert reason(payload) == (
        "entry[0].changes[0].value.messages[0].revoke.original_message_id: missing message id"
    )


def test_missing_status_value_names_the_field() -> None:
    payload = hook({"statuses": [{"id": "m1", "timestamp": "1700000000"}]})
    assert reason(payload) == "entry[0].changes[0].value.statuses[0].status: missing"


def test_wrong_type_names_the_full_path() -> None:
    payload = hook({"statuses": [status("m1", "sent", ts={"t": 1})]})  # type: ignore[arg-type]
    assert reason(payload) == (
        "invalid payload: Expected `int | float | str | null`, got `object` - at "
        "`$.entry[0].changes[0].value.statuses[0].timestamp`"
    )


def test_bad_timestamp_names_the_field() -> None:
    payload = hook({"statuses": [status("m1", "sent", ts="yesterday")]})
    assert reason(payload) == (
        "entry[0].changes[0].value.statuses[0].timestamp: not a timestamp: 'yesterday'"
    )


def test_missing_entry_and_missing_field_are_errors() -> None:
    assert reason({"object": "whatsapp_business_account"}) == (
        "entry: missing (Meta batches every change in entry[])"
    )
    payload = {"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {}}]}]}
    assert reason(payload) == "entry[0].changes[0].field: missing"


def test_not_json_is_an_error() -> None:
    with pytest.raises(DecodeError) as info:
        meta.decode(b"entry=1", JSON, {})
    assert info.value.reason.startswith("body is not valid JSON")


def test_meta_has_no_event_id() -> None:
    assert not hasattr(meta, "event_id")


# --- On-Premises API (tests/fixtures/meta, verbatim, sources in tests/fixtures/SOURCES.md) --


def test_fixture_set_is_the_one_these_tests_cover() -> None:
    assert fixture_names("meta") == [
        "onprem_message_text.json",
        "onprem_message_voice.json",
        "onprem_status_sent.json",
    ]


def test_on_premises_status_is_the_bare_value() -> None:
    """On-Premises posts ``{"statuses": [...]}`` without ``object``/``entry``/``changes``."""
    assert DECODING.sample("onprem_status_sent.json") == [
        StatusReported(
            key="9712A34B4A8B6AD50F", status="sent", raw="sent", provider_time=1518694700.0
        )
    ]


def test_on_premises_message_and_voice() -> None:
    text, voice = (DECODING.sample(f"onprem_message_{n}.json") for n in ("text", "voice"))
    assert text == [
        MessageObserved(
            key="41",
            direction="incoming",
            chat="250788123123",
            sender="250788123123",
            kind="text",
            text="hello world",
            provider_time=1454119029.0,
        )
    ]
    assert voice == [
        MessageObserved(
            key="41",
            direction="incoming",
            chat="250788123123",
            sender="250788123123",
            kind="voice",
            media="41",
            provider_time=1454119029.0,
        )
    ]


def test_on_premises_errors_and_failures_name_their_bare_path() -> None:
    assert DECODING.json({"errors": [{"code": 1014, "title": "Internal error"}]}) == [
        Ignored(
            reason="out-of-band error without a message id: 1014: Internal error", event="errors"
        )
    ]
    assert DECODING.reason({"statuses": [{"id": "X1", "timestamp": "1"}]}) == (
        "statuses[0].status: missing"
    )
    failed = {"id": "X2", "status": "failed", "timestamp": "1533332775"}
    failed["errors"] = [{"code": 470, "title": "outside the support window"}]  # type: ignore[list-item]
    assert DECODING.json({"statuses": [failed]}) == [
        StatusReported(
            key="X2",
            status="not_sent",
            raw="failed",
            provider_time=1533332775.0,
            error_code="470",
            error_text="outside the support window",
        )
    ]


def test_a_body_with_neither_entry_nor_a_bare_array_is_still_refused() -> None:
    assert DECODING.reason({"contacts": []}).startswith("entry: missing")
