"""Every sample in ../shared/samples/, POSTed through /hooks/…, folds to what its docs imply.

Each published webhook body goes through the real app (auth, append, COMMIT) into a real
PostgreSQL, the projector folds the log, and the read models are checked with SQL against
``EXPECTED``: a table written from the providers' documentation, ``shared/samples/SOURCES.md``
and ``status_mapping.json`` — not from what the decoders happen to return. Where the table and
a decoder disagree and the documentation sides with the table, the case is a strict xfail
(``DISPUTED``) naming the decoder bug; the decoder's owner fixes it, the xfail then fails loudly.

The multi-event scenarios at the end replay invariant 5 (order-independent, idempotent
folding; failures on record; acks for unseen messages) and the instance-status rule (latest
report by log position wins) through the same path.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp.test_utils import TestClient

from eventstore.pool import connect
from projections.providers import PROVIDERS
from projections.runner import LIVE_CHECKPOINT, Projector
from service.runtime.app import make_app
from tests.support import apps
from tests.support.samples import FORM, JSON, all_names, sample

Client = Callable[..., Awaitable[TestClient]]

IN, OUT = "incoming", "outgoing"


class Expect(msgspec.Struct, frozen=True, kw_only=True):
    """What one sample must leave in the read models of its own channel."""

    #: message key → (direction, state); exactly these messages exist in the channel
    messages: dict[str, tuple[str, str]] = {}
    #: message key → documented failure ids (each the ``code`` or the ``raw`` of one failure)
    failures: dict[str, tuple[str, ...]] = {}
    #: (message key, participant) → receipt state; exactly these receipts exist
    receipts: dict[tuple[str, str], str] = {}
    #: message key → {column of rm.messages: value} for traits the docs single out
    fields: dict[str, dict[str, Any]] = {}
    #: rm.instance_status.status of the channel (None: no row)
    instance: str | None = None
    #: the event is quarantined with a reason starting with this (None: nothing quarantined)
    quarantine: str | None = None
    #: text that must appear in the quarantine reason (the field it names)
    quarantine_names: str | None = None


def whatsable_key(phone: str, seconds: float, text: str) -> str:
    """WhatsAble sends no id for incoming messages; the key recipe its decoder documents."""
    material = json.dumps([phone, f"{seconds:.3f}", text], separators=(",", ":"))
    return "derived:" + hashlib.sha256(material.encode()).hexdigest()[:32]


WAMID = "wamid.xyzxyz"
GATE_ID = "3EB0436AE1E682FF3A37"
CHATAPI_ID = "false_17472822486@c.us_DF38E6A25B42CC8CCE57EC40F"
QIK_ID = "52JH6WmuSruAVyXvBBYemd0Ia"
WAHA_OWN = "true_11111111111@c.us_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
GREEN_IN = "F7AEC1B7086ECDC7E6E45923F5EDB825"
ZAPI_MSG = "A20DA9C0183A2D35A260F53F5D2B9244"
ZAPI_ACKED = "999999999999999999999"
TWILIO_FAILED = "SMe287d7109a5a925f182f0e07fe5b223b"
EVO_OWN = "3EB0B7AA9746D9215C1340"
EVO_WAMID = "wamid.HBgLNTkxNzExNDYyNjcVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"

#: (acklog provider, sample file) → expected read-model rows. Every sample is listed.
EXPECTED: dict[tuple[str, str], Expect] = {
    # --- WAMM: tip=msg carries the message and its state, tip=msg_state a status change;
    # msg_id is an int in one and a string in the other: one key "1234567".
    ("wamm", "msg_incoming_text.json"): Expect(
        messages={"1234567": (IN, "received")},
        fields={"1234567": {"kind": "text", "chat": "79001234567"}},
    ),
    ("wamm", "msg_state_delivered.json"): Expect(messages={"1234567": (OUT, "delivered")}),
    # --- WhatsGate: message = incoming, create/sent/ack = ours; ack 1 = sent.
    ("whatsgate", "message_incoming.json"): Expect(messages={GATE_ID: (IN, "received")}),
    ("whatsgate", "create_outgoing.json"): Expect(messages={GATE_ID: (OUT, "sent")}),
    ("whatsgate", "sent_async.json"): Expect(messages={GATE_ID: (OUT, "sent")}),
    ("whatsgate", "ack.json"): Expect(messages={GATE_ID: (OUT, "sent")}),
    ("whatsgate", "ready.json"): Expect(instance="connected"),
    ("whatsgate", "disconnect.json"): Expect(instance="disconnected"),
    # the documented error names no message: nothing to fold, nothing broken either
    ("whatsgate", "error.json"): Expect(),
    # not webhooks: the receiver's own answer and a bare message object (no event_action)
    ("whatsgate", "required_ack_response.json"): Expect(
        quarantine="invalid payload", quarantine_names="event_action"
    ),
    ("whatsgate", "message_object_with_quoted.json"): Expect(
        quarantine="invalid payload", quarantine_names="event_action"
    ),
    # --- Chat API: "FROMME - True - you have sent a message" (the false_ prefix is the doc's
    # slip); ack[].status is a string.
    ("chatapi", "messages_incoming.json"): Expect(
        messages={CHATAPI_ID: (OUT, "sending")}, fields={CHATAPI_ID: {"text": "Ok!"}}
    ),
    ("chatapi", "ack_delivered.json"): Expect(messages={CHATAPI_ID: (OUT, "delivered")}),
    # --- WhatsAble: statuses carry Meta wamids; incoming messages carry no id at all.
    ("whatsable", "message_status_delivered.json"): Expect(
        messages={"wamid.123456789": (OUT, "delivered")}
    ),
    ("whatsable", "incoming_message.json"): Expect(
        messages={whatsable_key("8801734363287", 1234567890, "Hello!"): (IN, "received")},
        fields={
            whatsable_key("8801734363287", 1234567890, "Hello!"): {
                "derived_key": True,
                "text": "Hello!",
            }
        },
    ),
    # --- Qikchat: message:in = incoming; message:status = "a message you sent".
    ("qikchat", "incoming_text.json"): Expect(messages={QIK_ID: (IN, "received")}),
    ("qikchat", "incoming_image.json"): Expect(
        messages={QIK_ID: (IN, "received")},
        fields={QIK_ID: {"kind": "image", "media": "media-url"}},
    ),
    ("qikchat", "status_read.json"): Expect(messages={QIK_ID: (OUT, "read")}),
    ("qikchat", "status_read.published.txt"): Expect(quarantine="body is not valid JSON"),
    # --- Meta Cloud API
    ("meta", "status_sent.json"): Expect(messages={WAMID: (OUT, "sent")}),
    ("meta", "status_sent_with_biz_opaque_callback_data.json"): Expect(
        messages={WAMID: (OUT, "sent")}
    ),
    ("meta", "status_sent_courier.json"): Expect(messages={"external_id": (OUT, "sent")}),
    ("meta", "status_delivered.json"): Expect(messages={WAMID: (OUT, "delivered")}),
    ("meta", "status_read.json"): Expect(messages={WAMID: (OUT, "read")}),
    ("meta", "status_played.json"): Expect(messages={WAMID: (OUT, "played")}),
    ("meta", "status_failed_130472.json"): Expect(
        messages={WAMID: (OUT, "not_sent")}, failures={WAMID: ("130472",)}
    ),
    ("meta", "status_failed_131014.json"): Expect(
        messages={"external_id": (OUT, "not_sent")}, failures={"external_id": ("131014",)}
    ),
    # On-Premises legacy "deleted" status: our message was deleted
    ("meta", "status_deleted_onprem_legacy.json"): Expect(
        messages={"external_id": (OUT, "deleted")}
    ),
    # group: one wamid, a receipt per participant (recipient_participant_id)
    ("meta", "status_group_read.json"): Expect(
        messages={"<WHATSAPP_MESSAGE_ID>": (OUT, "read")},
        receipts={("<WHATSAPP_MESSAGE_ID>", "<GROUP_PARTICIPANT_USER_PHONE_NUMBER>"): "read"},
    ),
    # statuses[] read, delivered, sent in ONE post: every element folds, the max rank wins
    ("meta", "CONSTRUCTED_batch_three_statuses_out_of_order.json"): Expect(
        messages={WAMID: (OUT, "read")}
    ),
    ("meta", "message_text_docs.json"): Expect(
        messages={
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=": (IN, "received")
        }
    ),
    ("meta", "message_image.json"): Expect(
        messages={WAMID: (IN, "received")}, fields={WAMID: {"kind": "image", "media": "65463453"}}
    ),
    ("meta", "message_voice.json"): Expect(
        messages={WAMID: (IN, "received")}, fields={WAMID: {"kind": "voice"}}
    ),
    ("meta", "message_reply_context.json"): Expect(
        messages={WAMID: (IN, "received")}, fields={WAMID: {"quoted": "wamid.xyzxyz=="}}
    ),
    ("meta", "message_reaction.json"): Expect(
        messages={WAMID: (IN, "received")},
        fields={WAMID: {"kind": "reaction", "quoted": "wamid.yzxyzx="}},
    ),
    ("meta", "message_group_text.json"): Expect(
        messages={"external_id": (IN, "received")}, fields={"external_id": {"chat": "555555555"}}
    ),
    # the same message twice in one POST: one message
    ("meta", "batch_two_identical_messages.json"): Expect(
        messages={"external_id": (IN, "received")}
    ),
    # the user revoked an incoming message: it is the ORIGINAL id that is deleted
    ("meta", "message_revoke_incoming_deleted.json"): Expect(
        messages={"<ORIGINAL_WHATSAPP_MESSAGE_ID>": (IN, "deleted")}
    ),
    # coexistence echo: we deleted one of our messages in the Business app
    ("meta", "echo_revoke_outgoing.json"): Expect(messages={"wamid.zzzzzz": (OUT, "deleted")}),
    # out-of-band errors name no message
    ("meta", "errors_out_of_band.json"): Expect(),
    # in-repo fixtures: the On-Premises API posts the bare value (no object/entry/changes)
    ("meta", "onprem_message_text.json"): Expect(messages={"41": (IN, "received")}),
    ("meta", "onprem_message_voice.json"): Expect(
        messages={"41": (IN, "received")}, fields={"41": {"kind": "voice"}}
    ),
    ("meta", "onprem_status_sent.json"): Expect(messages={"9712A34B4A8B6AD50F": (OUT, "sent")}),
    # --- WAHA: ack -1 ERROR, 0 PENDING, 1 SERVER, 2 DEVICE, 3 READ, 4 PLAYED
    ("waha", "message_text.json"): Expect(messages={WAHA_OWN: (OUT, "sent")}),  # fromMe, ack 1
    # "When people send you media …": event=message is an INCOMING message
    ("waha", "message_media_image.json"): Expect(
        messages={WAHA_OWN: (IN, "received")}, fields={WAHA_OWN: {"kind": "image"}}
    ),
    ("waha", "message_media_document.json"): Expect(
        messages={WAHA_OWN: (IN, "received")}, fields={WAHA_OWN: {"kind": "document"}}
    ),
    ("waha", "message_ack_read.json"): Expect(
        messages={"true_11111111111@c.us_4CC5EDD64BC22EBA6D639F2AF571346C": (OUT, "read")}
    ),
    ("waha", "message_ack_error_noweb.json"): Expect(
        messages={"true_8613700000000@c.us_3EB0D971A974F4AC7F77C5": (OUT, "not_sent")},
        failures={"true_8613700000000@c.us_3EB0D971A974F4AC7F77C5": ("-1",)},
    ),
    ("waha", "message_ack_status_broadcast_read.json"): Expect(
        messages={"true_status@broadcast_AAAAAAAAAAAAAAAAA": (OUT, "read")},
        receipts={("true_status@broadcast_AAAAAAAAAAAAAAAAA", "321321@c.us"): "read"},
    ),
    # the documented revoke has no revokedMessageId and WAHA warns before/after ids are not
    # message ids: nothing can be keyed
    ("waha", "message_revoked_docs_bug.json"): Expect(),
    ("waha", "poll_vote.json"): Expect(),
    ("waha", "presence_update_group.json"): Expect(),
    ("waha", "session_status_working.json"): Expect(instance="connected"),
    # in-repo fixtures: FAILED needs a restart (its own state); the 2022 envelope {event, payload}
    ("waha", "session_status_failed.json"): Expect(instance="failed"),
    ("waha", "v2022_message_ack.json"): Expect(
        messages={"true_11111111111@c.us_3EB0C0A1B2C3D4E5F6A7": (OUT, "delivered")}
    ),
    # before 2023.12 the engine's state.change is the only instance signal
    ("waha", "v2023_state_change_webjs_unpaired.json"): Expect(instance="logged_out"),
    ("waha", "v2023_state_change_noweb_close_401.json"): Expect(instance="logged_out"),
    # --- Evolution (Baileys): 0 ERROR,1 PENDING,2 SERVER_ACK,3 DELIVERY_ACK,4 READ,5 PLAYED
    ("evolution", "messages_upsert_incoming_text.json"): Expect(
        messages={"3EB03E3CA617ADA52AEA79": (IN, "received")},
        fields={"3EB03E3CA617ADA52AEA79": {"text": "hola - text"}},
    ),
    ("evolution", "messages_upsert_incoming_image.json"): Expect(
        messages={"3EB083096BF5E4096E4137": (IN, "received")},
        fields={"3EB083096BF5E4096E4137": {"kind": "image"}},
    ),
    # our own message echoed by messages.upsert, no status yet
    ("evolution", "messages_upsert_outgoing_text.json"): Expect(
        messages={EVO_OWN: (OUT, "sending")}
    ),
    # messages.update keyed by keyId (messageId is Evolution's database id)
    ("evolution", "CONSTRUCTED_messages_update_delivery_ack.json"): Expect(
        messages={EVO_OWN: (OUT, "delivered")}
    ),
    # close + statusReason 401 = logged out
    ("evolution", "connection_update_close_401.json"): Expect(instance="logged_out"),
    # in-repo fixtures (tests/fixtures/SOURCES.md): v1.x keys the update by data.id
    ("evolution", "v1_messages_update_delivery_ack.json"): Expect(
        messages={"BAE5F5A632EAE722": (OUT, "delivered")}
    ),
    # the Cloud API channel says fromMe=false of its own statuses; Meta's names are ours
    ("evolution", "v1_cloud_messages_update_delivered.json"): Expect(
        messages={EVO_WAMID: (OUT, "delivered")}
    ),
    ("evolution", "v2_cloud_messages_update_failed.json"): Expect(
        messages={EVO_WAMID: (OUT, "not_sent")}, failures={EVO_WAMID: ("FAILED",)}
    ),
    # close + statusReason 403 (Baileys DisconnectReason.forbidden) = banned
    ("evolution", "connection_update_close_403.json"): Expect(instance="banned"),
    # status.instance closed: Evolution stopped reconnecting (v1: only after a logout)
    ("evolution", "v1_status_instance_closed.json"): Expect(instance="logged_out"),
    ("evolution", "v2_status_instance_closed_406.json"): Expect(instance="stopped"),
    # --- Green-API
    ("greenapi", "incomingMessageReceived_text.json"): Expect(
        messages={GREEN_IN: (IN, "received")}
    ),
    ("greenapi", "incomingMessageReceived_image.json"): Expect(
        messages={GREEN_IN: (IN, "received")},
        fields={
            GREEN_IN: {
                "kind": "image",
                "media": "https://api.green-api.com/waInstance1234/downloadFile/"
                "19136A974392FA8CF584D70DD0E1AEDF",
            }
        },
    ),
    ("greenapi", "incomingMessageReceived_quoted_reply.json"): Expect(
        messages={GREEN_IN: (IN, "received")},
        fields={GREEN_IN: {"quoted": "9A73322488DCB7D9689A6112F2528C9D"}},
    ),
    ("greenapi", "outgoingMessageStatus_sent_apidog.json"): Expect(
        messages={"ECE6BBEA514B66872790C3D9D52C5C19": (OUT, "sent")}
    ),
    ("greenapi", "outgoingMessageStatus_noAccount.json"): Expect(
        messages={"3EB0608D6A2901063D63": (OUT, "not_sent")},
        failures={"3EB0608D6A2901063D63": ("noAccount",)},
    ),
    ("greenapi", "outgoingMessageStatus_failed_group_SWE004.json"): Expect(
        messages={"B3Q599E4A3724D50": (OUT, "not_sent")},
        failures={"B3Q599E4A3724D50": ("SWE004",)},
    ),
    # notAuthorized: the instance must be linked again by scanning a QR code
    ("greenapi", "stateInstanceChanged_notAuthorized.json"): Expect(instance="qr_required"),
    ("greenapi", "statusInstanceChanged_online.json"): Expect(instance="connected"),
    # in-repo fixture: yellowCard = sending suspended, session up (not a ban)
    ("greenapi", "stateInstanceChanged_yellowCard.json"): Expect(instance="suspended"),
    ("greenapi", "incomingMessageReceived_poll_pollCreationMessage.json"): Expect(
        messages={"F7AEC1B7086ECDC7E6E45923F5EDB825": (IN, "received")},
        fields={"F7AEC1B7086ECDC7E6E45923F5EDB825": {"kind": "poll", "text": "Poll Name"}},
    ),
    # --- Twilio (form bodies; SmsStatus=received marks the incoming-message webhook)
    ("twilio", "incoming_image_whatsapp.json"): Expect(
        messages={"MM21151abfaadc1fb79b782f8460862a52": (IN, "received")},
        fields={"MM21151abfaadc1fb79b782f8460862a52": {"kind": "image"}},
    ),
    ("twilio", "incoming_location_whatsapp.json"): Expect(
        messages={"SM9c871cd9649aa3829298e153ae6a8123": (IN, "received")},
        fields={"SM9c871cd9649aa3829298e153ae6a8123": {"kind": "location"}},
    ),
    ("twilio", "status_sent_whatsapp.json"): Expect(
        messages={"SM0cec4ed334e74bcbb64eb8b6684e9654": (OUT, "sent")}
    ),
    ("twilio", "status_sent_messaging_service.json"): Expect(
        messages={"SM0b6e2697aae04182a9f5b5c7a8994c7f": (OUT, "sent")}
    ),
    ("twilio", "status_delivered_whatsapp.json"): Expect(
        messages={"SMdf55df64a2ff4920bb0748193cfbb640": (OUT, "delivered")}
    ),
    ("twilio", "status_read_minimal.json"): Expect(messages={TWILIO_FAILED: (OUT, "read")}),
    ("twilio", "status_failed_63018_rate_limit.json"): Expect(
        messages={TWILIO_FAILED: (OUT, "not_sent")}, failures={TWILIO_FAILED: ("63018",)}
    ),
    ("twilio", "status_failed_21610_stop.json"): Expect(
        messages={TWILIO_FAILED: (OUT, "not_sent")}, failures={TWILIO_FAILED: ("21610",)}
    ),
    # --- Z-API: RECEIVED = delivered to the device; READ_BY_ME = we read an incoming one
    ("zapi", "status_SENT.json"): Expect(messages={ZAPI_ACKED: (OUT, "sent")}),
    ("zapi", "status_RECEIVED_delivered.json"): Expect(messages={ZAPI_ACKED: (OUT, "delivered")}),
    ("zapi", "status_READ.json"): Expect(messages={ZAPI_ACKED: (OUT, "read")}),
    ("zapi", "status_PLAYED.json"): Expect(messages={ZAPI_ACKED: (OUT, "played")}),
    ("zapi", "status_READ_BY_ME_incoming.json"): Expect(),
    # DeliveryCallback: handed to WhatsApp, NOT device delivery
    ("zapi", "delivery_callback_on_send.json"): Expect(messages={ZAPI_MSG: (OUT, "sent")}),
    ("zapi", "received_text.json"): Expect(
        messages={ZAPI_MSG: (IN, "received")}, fields={ZAPI_MSG: {"text": "test"}}
    ),
    ("zapi", "received_image_duplicate_keys.json"): Expect(
        messages={ZAPI_MSG: (IN, "received")}, fields={ZAPI_MSG: {"kind": "image"}}
    ),
    ("zapi", "received_group_join_request.json"): Expect(
        messages={ZAPI_MSG: (IN, "received")}, fields={ZAPI_MSG: {"chat": "5544999999999-group"}}
    ),
    ("zapi", "disconnected.json"): Expect(instance="disconnected"),
    ("zapi", "connected.published.txt"): Expect(quarantine="body is not valid JSON"),
}

#: Cases where the documentation and the decoder disagree and the documentation wins.
DISPUTED: dict[tuple[str, str], str] = {}


def _cases() -> list[Any]:
    cases = []
    for provider in PROVIDERS:
        for index, name in enumerate(all_names(provider)):
            marks = []
            if (provider, name) in DISPUTED:
                marks.append(pytest.mark.xfail(strict=True, reason=DISPUTED[provider, name]))
            cases.append(pytest.param(provider, name, index, marks=marks, id=f"{provider}/{name}"))
    return cases


# -- helpers ---------------------------------------------------------------------------------


class Hooks:
    """The real app on a real socket, plus channel creation and projector runs."""

    def __init__(self, client: TestClient, dsn: str) -> None:
        self.client = client
        self.dsn = dsn
        self.tokens: dict[str, str] = {}

    async def channel(self, name: str, provider: str) -> str:
        self.tokens[name] = await apps.add_channel(self.dsn, name, provider)
        return name

    async def post(self, channel: str, body: bytes, content_type: str = JSON) -> dict[str, Any]:
        resp = await self.client.post(
            f"/hooks/{channel}?token={self.tokens[channel]}",
            data=body,
            headers={"Content-Type": content_type},
        )
        assert resp.status == 200, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer

    async def fold(self) -> None:
        conn = await connect(self.dsn)
        try:
            await Projector(self.dsn).catch_up(conn)
        finally:
            await conn.close()


@pytest.fixture
async def hooks(aiohttp_client: Client, dsn: str) -> Hooks:
    return Hooks(await aiohttp_client(make_app(apps.settings(), dsn)), dsn)


@pytest.fixture
async def db(dsn: str) -> Any:
    conn = await connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def messages(db: asyncpg.Connection, channel: str) -> dict[str, asyncpg.Record]:
    rows = await db.fetch("SELECT * FROM rm.messages WHERE channel = $1", channel)
    return {r["key"]: r for r in rows}


def failure_ids(row: asyncpg.Record) -> list[tuple[str, str | None]]:
    return [(f["raw"], f.get("code")) for f in row["failures"]]


# -- every sample ----------------------------------------------------------------------------


def test_the_table_covers_every_webhook_sample() -> None:
    on_disk = {(p, n) for p in PROVIDERS for n in all_names(p)}
    assert on_disk == set(EXPECTED)
    assert set(DISPUTED) <= set(EXPECTED)


@pytest.mark.parametrize(("provider", "name", "index"), _cases())
async def test_sample_folds_to_its_documented_state(
    hooks: Hooks, db: asyncpg.Connection, provider: str, name: str, index: int
) -> None:
    expected = EXPECTED[provider, name]
    channel = await hooks.channel(f"{provider}-{index}", provider)
    body, content_type = sample(provider, name)
    await hooks.post(channel, body, content_type)
    await hooks.fold()

    # the one event was folded (or quarantined): the projector did not stop on it
    assert await db.fetchval("SELECT count(*) FROM events") == 1
    head = await db.fetchval("SELECT max(position) FROM events")
    done = await db.fetchval("SELECT position FROM checkpoints WHERE name = $1", LIVE_CHECKPOINT)
    assert done == head

    found = await messages(db, channel)
    assert {k: (r["direction"], r["state"]) for k, r in found.items()} == expected.messages
    for key, row in found.items():
        assert row["provider"] == provider
        wanted = expected.failures.get(key, ())
        recorded = failure_ids(row)
        assert len(recorded) == len(wanted), recorded
        for ident in wanted:
            assert any(ident in pair for pair in recorded), (ident, recorded)
        for column, value in expected.fields.get(key, {}).items():
            assert row[column] == value, (key, column)

    timeline = await db.fetch("SELECT DISTINCT key FROM rm.timeline WHERE channel = $1", channel)
    assert {r["key"] for r in timeline} == set(expected.messages)

    receipts = await db.fetch(
        "SELECT key, participant, state FROM rm.receipts WHERE channel = $1", channel
    )
    assert {(r["key"], r["participant"]): r["state"] for r in receipts} == expected.receipts

    status = await db.fetchval("SELECT status FROM rm.instance_status WHERE channel = $1", channel)
    assert status == expected.instance
    history = await db.fetchval(
        "SELECT count(*) FROM rm.instance_history WHERE channel = $1", channel
    )
    assert history == (0 if expected.instance is None else 1)

    reasons = [
        r["reason"]
        for r in await db.fetch("SELECT reason FROM rm.quarantine WHERE channel = $1", channel)
    ]
    if expected.quarantine is None:
        assert reasons == []
    else:
        assert len(reasons) == 1 and reasons[0].startswith(expected.quarantine), reasons
        if expected.quarantine_names:
            assert expected.quarantine_names in reasons[0]


# -- multi-event scenarios -------------------------------------------------------------------

FOLD_MODES = pytest.mark.parametrize("fold_each", [False, True], ids=["one-batch", "fold-each"])


async def _post_all(
    hooks: Hooks, channel: str, bodies: list[tuple[bytes, str]], fold_each: bool
) -> list[dict[str, Any]]:
    answers = []
    for body, content_type in bodies:
        answers.append(await hooks.post(channel, body, content_type))
        if fold_each:
            await hooks.fold()
    await hooks.fold()
    return answers


@FOLD_MODES
async def test_meta_reverse_order_and_a_duplicate(
    hooks: Hooks, db: asyncpg.Connection, fold_each: bool
) -> None:
    channel = await hooks.channel("meta-acks", "meta")
    read, delivered, sent = (
        sample("meta", f"status_{s}.json") for s in ("read", "delivered", "sent")
    )
    answers = await _post_all(hooks, channel, [read, delivered, sent, delivered], fold_each)
    positions = [a["position"] for a in answers]
    assert [a["duplicate_of"] for a in answers] == [None, None, None, positions[1]]

    row = (await messages(db, channel))[WAMID]
    assert (row["direction"], row["state"]) == (OUT, "read")
    assert set(row["milestones"]) == {"sent", "delivered", "read"}
    assert row["failures"] == []

    timeline = await db.fetch(
        "SELECT position, status, advanced, duplicate_of FROM rm.timeline"
        " WHERE channel = $1 AND key = $2 ORDER BY position, seq",
        channel,
        WAMID,
    )
    assert [tuple(r) for r in timeline] == [
        (positions[0], "read", True, None),
        (positions[1], "delivered", False, None),
        (positions[2], "sent", False, None),
        (positions[3], "delivered", False, positions[1]),
    ]


def twilio_status(sid: str, status: str) -> tuple[bytes, str]:
    return urllib.parse.urlencode({"MessageSid": sid, "MessageStatus": status}).encode(), FORM


@FOLD_MODES
async def test_a_late_sent_never_hides_a_failure(
    hooks: Hooks, db: asyncpg.Connection, fold_each: bool
) -> None:
    channel = await hooks.channel("twilio-late", "twilio")
    failed = sample("twilio", "status_failed_63018_rate_limit.json")
    await _post_all(hooks, channel, [failed, twilio_status(TWILIO_FAILED, "sent")], fold_each)
    row = (await messages(db, channel))[TWILIO_FAILED]
    assert (row["direction"], row["state"]) == (OUT, "not_sent")
    assert set(row["milestones"]) == {"not_sent", "sent"}
    assert failure_ids(row) == [("failed", "63018")]

    await _post_all(hooks, channel, [twilio_status(TWILIO_FAILED, "delivered")], fold_each)
    row = (await messages(db, channel))[TWILIO_FAILED]
    assert row["state"] == "delivered"
    assert failure_ids(row) == [("failed", "63018")]
    statuses = await db.fetch(
        "SELECT status, advanced FROM rm.timeline WHERE channel = $1 ORDER BY position", channel
    )
    assert [tuple(r) for r in statuses] == [
        ("not_sent", True),
        ("sent", False),
        ("delivered", True),
    ]


@FOLD_MODES
async def test_delivered_before_the_failure_still_keeps_it(
    hooks: Hooks, db: asyncpg.Connection, fold_each: bool
) -> None:
    """The reverse arrival order of the test above folds to the same message."""
    channel = await hooks.channel("twilio-reverse", "twilio")
    bodies = [
        twilio_status(TWILIO_FAILED, "delivered"),
        twilio_status(TWILIO_FAILED, "sent"),
        sample("twilio", "status_failed_63018_rate_limit.json"),
    ]
    await _post_all(hooks, channel, bodies, fold_each)
    row = (await messages(db, channel))[TWILIO_FAILED]
    assert (row["direction"], row["state"]) == (OUT, "delivered")
    assert set(row["milestones"]) == {"not_sent", "sent", "delivered"}
    assert failure_ids(row) == [("failed", "63018")]


def zapi_connected(momment_ms: int) -> tuple[bytes, str]:
    """The published ConnectedCallback is not JSON; this is its content, repaired."""
    body = {
        "type": "ConnectedCallback",
        "connected": True,
        "momment": momment_ms,
        "instanceId": "instance.id",
        "phone": "5544999999999",
    }
    return json.dumps(body).encode(), JSON


def evolution_open() -> tuple[bytes, str]:
    body = json.loads(sample("evolution", "connection_update_close_401.json")[0])
    body["data"] = {"instance": "tigo1", "state": "open", "statusReason": 200}
    return json.dumps(body).encode(), JSON


@FOLD_MODES
@pytest.mark.parametrize(
    ("provider", "first", "then", "expected"),
    [
        # the connected report claims a LATER provider time; the log position still decides
        pytest.param(
            "zapi",
            zapi_connected(1_700_000_000_000),
            sample("zapi", "disconnected.json"),
            ["connected", "disconnected"],
            id="zapi-connected-then-disconnected",
        ),
        pytest.param(
            "zapi",
            sample("zapi", "disconnected.json"),
            zapi_connected(1_000_000_000_000),
            ["disconnected", "connected"],
            id="zapi-disconnected-then-connected",
        ),
        # not monotone: reconnecting after a logout is connected again
        pytest.param(
            "evolution",
            sample("evolution", "connection_update_close_401.json"),
            evolution_open(),
            ["logged_out", "connected"],
            id="evolution-logged-out-then-open",
        ),
        pytest.param(
            "greenapi",
            sample("greenapi", "statusInstanceChanged_online.json"),
            sample("greenapi", "stateInstanceChanged_notAuthorized.json"),
            ["connected", "qr_required"],
            id="greenapi-online-then-not-authorized",
        ),
    ],
)
async def test_instance_status_latest_by_position_wins(
    hooks: Hooks,
    db: asyncpg.Connection,
    fold_each: bool,
    provider: str,
    first: tuple[bytes, str],
    then: tuple[bytes, str],
    expected: list[str],
) -> None:
    channel = await hooks.channel(f"{provider}-instance", provider)
    answers = await _post_all(hooks, channel, [first, then], fold_each)
    current = await db.fetchrow(
        "SELECT status, position FROM rm.instance_status WHERE channel = $1", channel
    )
    assert tuple(current) == (expected[-1], answers[-1]["position"])
    history = await db.fetch(
        "SELECT status FROM rm.instance_history WHERE channel = $1 ORDER BY position, seq",
        channel,
    )
    assert [r["status"] for r in history] == expected


@pytest.mark.parametrize(
    ("provider", "name", "key", "state"),
    [
        ("zapi", "status_SENT.json", ZAPI_ACKED, "sent"),
        ("wamm", "msg_state_delivered.json", "1234567", "delivered"),
        (
            "waha",
            "message_ack_read.json",
            "true_11111111111@c.us_4CC5EDD64BC22EBA6D639F2AF571346C",
            "read",
        ),
        ("greenapi", "outgoingMessageStatus_noAccount.json", "3EB0608D6A2901063D63", "not_sent"),
        ("twilio", "status_read_minimal.json", TWILIO_FAILED, "read"),
        ("chatapi", "ack_delivered.json", CHATAPI_ID, "delivered"),
    ],
)
async def test_an_ack_for_an_unseen_message_creates_it_outgoing(
    hooks: Hooks, db: asyncpg.Connection, provider: str, name: str, key: str, state: str
) -> None:
    channel = await hooks.channel(f"{provider}-unseen", provider)
    body, content_type = sample(provider, name)
    await _post_all(hooks, channel, [(body, content_type)], fold_each=False)
    found = await messages(db, channel)
    assert list(found) == [key]
    row = found[key]
    assert (row["direction"], row["state"]) == (OUT, state)
    assert not row["observed_in"] and not row["observed_out"]
    assert set(row["milestones"]) == {state}


@FOLD_MODES
async def test_the_message_seen_after_its_ack_keeps_the_ack(
    hooks: Hooks, db: asyncpg.Connection, fold_each: bool
) -> None:
    """Evolution: DELIVERY_ACK first, then the messages.upsert echo of the same message."""
    channel = await hooks.channel("evolution-late-echo", "evolution")
    bodies = [
        sample("evolution", "CONSTRUCTED_messages_update_delivery_ack.json"),
        sample("evolution", "messages_upsert_outgoing_text.json"),
    ]
    await _post_all(hooks, channel, bodies, fold_each)
    row = (await messages(db, channel))[EVO_OWN]
    assert (row["direction"], row["state"]) == (OUT, "delivered")
    assert row["observed_out"] and not row["observed_in"]
    assert row["text"] == "menasje saliente solo texto"
    assert set(row["milestones"]) == {"sending", "delivered"}
