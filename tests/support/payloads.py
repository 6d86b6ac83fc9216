"""Realistic webhook bodies with fresh ids, in real provider formats (Meta Cloud API)."""

from __future__ import annotations

import datetime as dt
import json

from eventstore.events import NewEvent

PHONE_ID = "106540352242922"


def _envelope(value: dict[str, object]) -> bytes:
    return json.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "102290129340398",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": PHONE_ID,
                                },
                                **value,
                            },
                        }
                    ],
                }
            ],
        }
    ).encode()


def meta_status(
    wamid: str,
    status: str,
    ts: int = 1700000000,
    code: int | None = None,
    participant: str | None = None,
) -> bytes:
    entry: dict[str, object] = {
        "id": wamid,
        "status": status,
        "timestamp": str(ts),
        "recipient_id": "16505551234",
    }
    if participant is not None:  # a group message's receipt from one member
        entry["recipient_participant_id"] = participant
    if code is not None:
        entry["errors"] = [{"code": code, "title": "Message failed"}]
    return _envelope({"statuses": [entry]})


def meta_incoming(wamid: str, text: str = "hi", ts: int = 1700000000) -> bytes:
    return _envelope(
        {
            "contacts": [{"profile": {"name": "Kerry"}, "wa_id": "16505551234"}],
            "messages": [
                {
                    "from": "16505551234",
                    "id": wamid,
                    "timestamp": str(ts),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        }
    )


def event(
    body: bytes,
    channel: str = "meta",
    provider: str = "meta",
    at: dt.datetime | None = None,
) -> NewEvent:
    return NewEvent(
        channel=channel,
        provider=provider,
        body=body,
        received_at=at or dt.datetime.now(dt.UTC),
        content_type="application/json",
    ).with_dedup_key(None)


def waha_outgoing(message_id: str, ack: int = 0) -> bytes:
    """A WAHA ``message`` event for a message we sent (fromMe), still pending (ack 0)."""
    return json.dumps(
        {
            "event": "message.any",
            "session": "default",
            "payload": {
                "id": f"true_11111111111@c.us_{message_id}",
                "timestamp": 1667561485,
                "from": "11111111111@c.us",
                "fromMe": True,
                "to": "11111111111@c.us",
                "body": "Hi there!",
                "hasMedia": False,
                "ack": ack,
            },
        }
    ).encode()


def waha_ack(message_id: str, ack: int) -> bytes:
    names = {-1: "ERROR", 0: "PENDING", 1: "SERVER", 2: "DEVICE", 3: "READ", 4: "PLAYED"}
    return json.dumps(
        {
            "event": "message.ack",
            "session": "default",
            "payload": {
                "id": f"true_11111111111@c.us_{message_id}",
                "from": "11111111111@c.us",
                "participant": None,
                "fromMe": True,
                "ack": ack,
                "ackName": names[ack],
            },
        }
    ).encode()
