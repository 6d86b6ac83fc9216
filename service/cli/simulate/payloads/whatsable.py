"""WhatsAble bodies (shapes: shared/samples/whatsable/*): ``incoming_message`` (no message id:
acklog derives one) and ``message_status`` keyed by the Meta wamid WhatsAble forwards."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import ClassVar

from projections.providers.whatsable import derive_key
from service.cli.simulate.payloads.base import Ack, Builder, Msg, Request, Step, encode, iso, now


class WhatsAble(Builder):
    name = "whatsable"
    cannot: ClassVar[dict[Step, str]] = {
        "outgoing": "WhatsAble posts no webhook for the messages you send; the first"
        " message_status creates the message",
        "failure": "WhatsAble documents no failure status",
        "instance": "WhatsAble sends no instance (connection) events",
    }
    notes = (
        "only 'delivered' is shown in the doc; 'sent' and 'read' follow the Meta statuses"
        " WhatsAble forwards",
    )

    def incoming(self) -> tuple[Msg, Request]:
        contact, text, at = self.ids.phone(), self.texts()[0], int(now())
        t = dt.datetime.fromtimestamp(at, dt.UTC)
        clock = f"{t.hour % 12 or 12}:{t:%M:%S} {'AM' if t.hour < 12 else 'PM'}"
        last = [{"type": "user", "content": text, "timestamp": iso(at), "content_type": "text"}]
        data = {
            "last_messages": encode(last).decode(),  # a JSON-encoded string, as documented
            "conversation_paragraph": f"User ({clock}): {text}",
            "phone_number": contact,
            "recipient_name": "Simulated Contact",
            "user_id": str(uuid.UUID(int=self.ids.rng.getrandbits(128), version=4)),
            "last_message_of_user": text,
            "last_message_of_bot": "",
            "message_type": "text",
            "user_timestamp": at,
            "bot_timestamp": at,
        }
        msg = Msg(key=derive_key(contact, float(at), text), contact=contact, text=text)
        body = encode({"event": "incoming_message", "data": data})
        return msg, Request(body=body, raw="incoming_message")

    def new_outgoing(self) -> Msg:
        contact = self.ids.phone()
        return Msg(key=self.ids.wamid(contact), contact=contact, text=self.texts()[1])

    def ack(self, msg: Msg, status: Ack) -> Request:
        data = {"message_id": msg.key, "status": status, "timestamp": iso(now())}
        body = encode({"event": "message_status", "data": data})
        return Request(body=body, raw=f"message_status {status}")
