"""Meta WhatsApp Cloud API bodies (shapes: shared/samples/meta_cloud/*): the
``whatsapp_business_account`` envelope with ``messages[]`` or ``statuses[]``."""

from __future__ import annotations

from typing import Any, ClassVar

from service.cli.simulate.payloads.base import (
    Ack,
    Builder,
    Failure,
    Msg,
    Request,
    Step,
    encode,
    now,
)

#: the failure in shared/samples/meta_cloud/status_failed_130472.json
ERROR: dict[str, Any] = {
    "code": 130472,
    "title": "User's number is part of an experiment",
    "message": "User's number is part of an experiment",
    "error_data": {
        "details": "Failed to send message because this user's phone number is part of an"
        " experiment"
    },
    "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
}


class Meta(Builder):
    name = "meta"
    cannot: ClassVar[dict[Step, str]] = {
        "outgoing": "the Cloud API posts no webhook for messages sent through it; the first"
        " status creates the message",
        "instance": "the Cloud API sends no connection events for a phone number",
    }

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.waba_id = self.ids.digits(15)
        self.phone_number_id = self.ids.digits(15)
        self.conversations: dict[str, str] = {}

    def _envelope(self, value: dict[str, Any]) -> bytes:
        metadata = {"display_phone_number": self.me, "phone_number_id": self.phone_number_id}
        change = {
            "value": {"messaging_product": "whatsapp", "metadata": metadata, **value},
            "field": "messages",
        }
        return encode(
            {
                "object": "whatsapp_business_account",
                "entry": [{"id": self.waba_id, "changes": [change]}],
            }
        )

    def incoming(self) -> tuple[Msg, Request]:
        contact = self.ids.phone()
        msg = Msg(key=self.ids.wamid(contact), contact=contact, text=self.texts()[0])
        value = {
            "contacts": [{"profile": {"name": "Simulated Contact"}, "wa_id": contact}],
            "messages": [
                {
                    "from": contact,
                    "id": msg.key,
                    "timestamp": str(int(now())),
                    "type": "text",
                    "text": {"body": msg.text},
                }
            ],
        }
        return msg, Request(body=self._envelope(value), raw="messages[] text")

    def new_outgoing(self) -> Msg:
        contact = self.ids.phone()
        return Msg(key=self.ids.wamid(contact), contact=contact, text=self.texts()[1])

    def _status(self, msg: Msg, status: str, **extra: Any) -> bytes:
        entry: dict[str, Any] = {
            "id": msg.key,
            "status": status,
            "timestamp": str(int(now())),
            "recipient_id": msg.contact,
            **extra,
        }
        return self._envelope({"statuses": [entry]})

    def ack(self, msg: Msg, status: Ack) -> Request:
        conversation = self.conversations.setdefault(msg.key, self.ids.hex(30, upper=False))
        origin = {"id": conversation, "origin": {"type": "service"}}
        if status == "sent":
            origin["expiration_timestamp"] = str(int(now()) + 86400)
        pricing = {"billable": True, "pricing_model": "CBP", "category": "service"}
        body = self._status(msg, status, conversation=origin, pricing=pricing)
        return Request(body=body, raw=f"statuses[] {status}")

    def failure(self, msg: Msg) -> Failure:
        body = self._status(msg, "failed", errors=[ERROR])
        request = Request(body=body, raw=f"statuses[] failed {ERROR['code']}")
        return Failure(request=request, code=str(ERROR["code"]))
