"""Each provider's raw status → canonical status, pinned by hand from the providers' documents.

The expected tables below are written by hand from ``shared/samples/status_mapping.json``
(the mapping derived from each provider's documentation), ``shared/samples/SOURCES.md``, the
seed documents in ``shared/seeds`` and the provider table of docs/providers.md, with docs/design.md's
vocabulary (``pending`` → ``sending``, ``FAILED`` → ``not_sent``). They are never read from
the decoders' own tables: each row goes through the real decoder, in a published sample whose
status field is set to the row's raw value.
"""

from __future__ import annotations

import copy
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from projections import providers
from projections.facts import DecodeError, InstanceStatusReported, StatusReported
from tests.support.samples import sample

# provider → (sample, how to put a raw status into it) ------------------------------------------


def _set(path: list[str | int]) -> Callable[[Any, Any], None]:
    def put(doc: Any, value: Any) -> None:
        for step in path[:-1]:
            doc = doc[step]
        doc[path[-1]] = value

    return put


def _waha(doc: Any, value: Any) -> None:
    """``(ack, ackName)``; None leaves the field out (WAHA engines send one or both)."""
    number, name = value
    for field, v in (("ack", number), ("ackName", name)):
        if v is None:
            doc["payload"].pop(field, None)
        else:
            doc["payload"][field] = v


def _chatapi_message(doc: Any, value: Any) -> None:
    """An outgoing ``messages[]`` entry carrying ``ack`` (sent 1, delivered 2, viewed 3)."""
    doc["messages"][0]["fromMe"] = True
    doc["messages"][0]["ack"] = value


def _whatsgate(doc: Any, value: Any) -> None:
    doc["event_data"]["message"]["ack"] = value


SETTERS: dict[str, tuple[str, Callable[[Any, Any], None]]] = {
    "wamm": ("msg_state_delivered.json", _set(["msg_data", "state"])),
    "whatsgate": ("ack.json", _whatsgate),
    "chatapi": ("ack_delivered.json", _set(["ack", 0, "status"])),
    "whatsable": ("message_status_delivered.json", _set(["data", "status"])),
    "qikchat": ("status_read.json", _set(["payload", "status"])),
    "meta": (
        "status_delivered.json",
        _set(["entry", 0, "changes", 0, "value", "statuses", 0, "status"]),
    ),
    "waha": ("message_ack_read.json", _waha),
    "chatapi_messages": ("messages_incoming.json", _chatapi_message),
    "evolution": ("CONSTRUCTED_messages_update_delivery_ack.json", _set(["data", "status"])),
    "greenapi": ("outgoingMessageStatus_sent_apidog.json", _set(["status"])),
    "zapi": ("status_READ.json", _set(["status"])),
}

# the hand-written tables ----------------------------------------------------------------------

EXPECTED: dict[str, list[tuple[Any, str]]] = {
    # WAMM docs: msg_data.state sending, sent, delivered, viewed, not sent (deleted is its own fact)
    "wamm": [
        ("sending", "sending"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("viewed", "read"),
        ("not sent", "not_sent"),
    ],
    # WhatsGate docs: ack 1 sent, 2 delivered, 3 read; whatsapp-web.js ACK_ERROR -1,
    # ACK_PENDING 0, ACK_PLAYED 4 (WhatsGate wraps whatsapp-web.js)
    "whatsgate": [
        (-1, "not_sent"),
        (0, "sending"),
        (1, "sent"),
        (2, "delivered"),
        (3, "read"),
        (4, "played"),
    ],
    # Chat API docs: ack[].status sent, delivered, viewed; webhookStatuses queued, not sent
    "chatapi": [
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("viewed", "read"),
        ("queued", "sending"),
        ("not sent", "not_sent"),
    ],
    # WhatsAble: Meta's vocabulary (only delivered shown in its docs)
    "whatsable": [
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "read"),
        ("played", "played"),
        ("failed", "not_sent"),
    ],
    # Qikchat: sent, delivered, read documented; failed assumed Meta-like
    "qikchat": [
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "read"),
        ("failed", "not_sent"),
    ],
    # Meta Cloud API statuses[].status
    "meta": [
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "read"),
        ("played", "played"),
        ("failed", "not_sent"),
    ],
    # Chat API messages[].ack 1/2/3 (the same as ack[].status sent/delivered/viewed)
    "chatapi_messages": [("1", "sent"), ("2", "delivered"), ("3", "read")],
    # WAHA / whatsapp-web.js ack + ackName, together or alone
    "waha": [
        (pair, canonical)
        for number, name, canonical in [
            (-1, "ERROR", "not_sent"),
            (0, "PENDING", "sending"),
            (1, "SERVER", "sent"),
            (2, "DEVICE", "delivered"),
            (3, "READ", "read"),
            (4, "PLAYED", "played"),
        ]
        for pair in ((number, name), (number, None), (None, name))
    ],
    # Evolution (Baileys names; Cloud-API channel spells SENT/DELIVERED/FAILED)
    "evolution": [
        ("ERROR", "not_sent"),
        ("PENDING", "sending"),
        ("SERVER_ACK", "sent"),
        ("DELIVERY_ACK", "delivered"),
        ("READ", "read"),
        ("PLAYED", "played"),
        ("SENT", "sent"),
        ("DELIVERED", "delivered"),
        ("FAILED", "not_sent"),
        # Baileys proto ints (renderStatus): 0 ERROR … 5 PLAYED, +1 against whatsapp-web.js
        (0, "not_sent"),
        (1, "sending"),
        (2, "sent"),
        (3, "delivered"),
        (4, "read"),
        (5, "played"),
    ],
    # Green-API outgoingMessageStatus.status
    "greenapi": [
        ("pending", "sending"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "read"),
        ("failed", "not_sent"),
        ("fail", "not_sent"),
        ("noAccount", "not_sent"),
        ("notInGroup", "not_sent"),
        ("yellowCard", "not_sent"),
        ("noActiveSession", "not_sent"),
    ],
    # Z-API MessageStatusCallback: RECEIVED is delivered to the device
    # Z-API MessageStatusCallback (developer.z-api.io): SENT, RECEIVED (= delivered to the
    # device), READ, PLAYED; READ_BY_ME is our own read (no outgoing status, test below).
    # PENDING and MESSAGE_RECEIVED are not in today's docs: pinned from docs/providers.md's table.
    "zapi": [
        ("SENT", "sent"),
        ("RECEIVED", "delivered"),
        ("READ", "read"),
        ("PLAYED", "played"),
        ("PENDING", "sending"),
        ("MESSAGE_RECEIVED", "delivered"),
    ],
}

# Twilio posts a form: MessageStatus
TWILIO: list[tuple[str, str]] = [
    ("accepted", "sending"),
    ("scheduled", "sending"),
    ("queued", "sending"),
    ("sending", "sending"),
    ("sent", "sent"),
    ("delivered", "delivered"),
    ("partially_delivered", "delivered"),
    ("read", "read"),
    ("undelivered", "not_sent"),
    ("failed", "not_sent"),
    ("canceled", "not_sent"),
]


def statuses(provider: str, body: bytes, ctype: str) -> list[str]:
    facts = providers.decode(provider, body, ctype, {"Content-Type": ctype})
    return [f.status for f in facts if isinstance(f, StatusReported)]


@pytest.mark.parametrize(
    ("provider", "raw", "canonical"),
    [(p, raw, canonical) for p, rows in EXPECTED.items() for raw, canonical in rows],
)
def test_status_table(provider: str, raw: Any, canonical: str) -> None:
    name, put = SETTERS[provider]
    provider = provider.split("_")[0]
    body, ctype = sample(provider, name)
    doc = copy.deepcopy(json.loads(body))
    put(doc, raw)
    assert statuses(provider, json.dumps(doc).encode(), ctype) == [canonical]


@pytest.mark.parametrize(("raw", "canonical"), TWILIO)
def test_twilio_status_table(raw: str, canonical: str) -> None:
    body, ctype = sample("twilio", "status_delivered_whatsapp.json")
    form = [
        (k, raw if k == "MessageStatus" else v)
        for k, v in urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
        if k not in ("SmsStatus",)
    ]
    assert statuses("twilio", urllib.parse.urlencode(form).encode(), ctype) == [canonical]


@pytest.mark.parametrize("provider", sorted(EXPECTED))
def test_an_undocumented_status_is_never_guessed(provider: str) -> None:
    name, put = SETTERS[provider]
    provider = provider.split("_")[0]
    body, ctype = sample(provider, name)
    doc = json.loads(body)
    put(doc, (99, "BOGUS") if provider == "waha" else 99 if provider == "whatsgate" else "bogus")
    try:
        got = statuses(provider, json.dumps(doc).encode(), ctype)
    except DecodeError:
        return  # quarantined: fine, never guessed
    assert got == [], got


def test_every_provider_has_its_status_table() -> None:
    """A new provider's module is picked up here: its raw statuses need a hand-written table."""
    pinned = {p.split("_")[0] for p in EXPECTED} | {"twilio"}
    assert set(providers.PROVIDERS) <= pinned, set(providers.PROVIDERS) - pinned


def test_zapi_read_by_me_is_no_outgoing_status() -> None:
    body, ctype = sample("zapi", "status_READ_BY_ME_incoming.json")
    assert statuses("zapi", body, ctype) == []


# instance (connection) tables -----------------------------------------------------------------


def _evolution_state(doc: Any, value: Any) -> None:
    doc["data"]["state"] = value
    doc["data"].pop("statusReason", None)


def _chatapi_instance(doc: Any, value: Any) -> None:
    doc.pop("ack", None)
    doc["status"] = value


INSTANCE: dict[str, tuple[str, Callable[[Any, Any], None], list[tuple[str, str]]]] = {
    # WAHA session.status payload.status
    "waha": (
        "session_status_working.json",
        _set(["payload", "status"]),
        [
            ("STOPPED", "stopped"),
            ("STARTING", "starting"),
            ("SCAN_QR_CODE", "qr_required"),
            ("WORKING", "connected"),
            ("FAILED", "failed"),
        ],
    ),
    # Green-API stateInstanceChanged.stateInstance
    "greenapi": (
        "stateInstanceChanged_notAuthorized.json",
        _set(["stateInstance"]),
        [
            ("authorized", "connected"),
            ("notAuthorized", "qr_required"),
            ("blocked", "banned"),
            ("sleepMode", "disconnected"),
            ("starting", "starting"),
            ("yellowCard", "suspended"),
            ("pendingCode", "qr_required"),
        ],
    ),
    # Green-API statusInstanceChanged.statusInstance: the socket axis
    "greenapi_socket": (
        "statusInstanceChanged_online.json",
        _set(["statusInstance"]),
        [("online", "connected"), ("offline", "disconnected")],
    ),
    # Evolution connection.update data.state (without a statusReason)
    "evolution": (
        "connection_update_close_401.json",
        _evolution_state,
        [
            ("open", "connected"),
            ("connecting", "starting"),
            ("close", "disconnected"),
            ("refused", "stopped"),
        ],
    ),
    # whatsapp-web.js disconnect reasons (WAState and "LOGOUT"), as WhatsGate forwards them
    "whatsgate": (
        "disconnect.json",
        _set(["event_data", "reason"]),
        [
            ("LOGOUT", "logged_out"),
            ("UNPAIRED", "logged_out"),
            ("UNPAIRED_IDLE", "logged_out"),
            ("TOS_BLOCK", "banned"),
            ("SMB_TOS_BLOCK", "banned"),
            ("CONFLICT", "disconnected"),
            ("Client disconnected", "disconnected"),
        ],
    ),
    # Chat API instance status (seeds/chat-api.txt: init, loading, got qr code, authenticated)
    "chatapi": (
        "ack_delivered.json",
        _chatapi_instance,
        [
            ("init", "starting"),
            ("loading", "starting"),
            ("got qr code", "qr_required"),
            ("authenticated", "connected"),
        ],
    ),
}


@pytest.mark.parametrize(
    ("provider", "raw", "canonical"),
    [(p, raw, c) for p, (_, _, rows) in INSTANCE.items() for raw, c in rows],
)
def test_instance_table(provider: str, raw: str, canonical: str) -> None:
    name, put, _ = INSTANCE[provider]
    provider = provider.split("_")[0]
    body, ctype = sample(provider, name)
    doc = json.loads(body)
    put(doc, raw)
    facts = providers.decode(provider, json.dumps(doc).encode(), ctype, {})
    assert [f.status for f in facts if isinstance(f, InstanceStatusReported)] == [canonical]
