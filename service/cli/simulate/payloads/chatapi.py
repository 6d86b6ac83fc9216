"""Chat API bodies (shapes: shared/samples/chatapi/*): batched ``messages[]`` and ``ack[]``,
plus the instance status (``status``)."""

from __future__ import annotations

from typing import Any, ClassVar

from service.cli.simulate.payloads.base import Ack, Builder, Msg, Request, Step, encode, now

#: our canonical ack → Chat API's ``ack[].status`` (a string; ``viewed`` is read)
STATUS: dict[Ack, str] = {"sent": "sent", "delivered": "delivered", "read": "viewed"}


class ChatApi(Builder):
    name = "chatapi"
    cannot: ClassVar[dict[Step, str]] = {
        "failure": "Chat API's webhook documents only sent, delivered and viewed acks",
    }
    notes = (
        "instance status shape assumed ({status: {accountStatus, statusData.substatus}}):"
        " the doc shows it only as an image",
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.instance_id = self.ids.digits(5)
        self.numbers: dict[str, int] = {}

    def _message(self, msg: Msg, from_me: bool) -> bytes:
        chat = f"{msg.contact}@c.us"
        self.numbers[msg.key] = self.ids.serial()
        entry = {
            "id": msg.key,
            "body": msg.text,
            "type": "chat",
            "senderName": "acklog" if from_me else "Simulated Contact",
            "fromMe": from_me,
            "self": int(from_me),
            "isForwarded": 0,
            "author": f"{self.me}@c.us" if from_me else chat,
            "time": int(now()),
            "chatId": chat,
            "messageNumber": self.numbers[msg.key],
            "quotedMsgId": None,
        }
        return encode({"instanceId": self.instance_id, "messages": [entry]})

    def incoming(self) -> tuple[Msg, Request]:
        contact = self.ids.phone()
        key = self.ids.serialized(False, f"{contact}@c.us", self.ids.phone_id())
        msg = Msg(key=key, contact=contact, text=self.texts()[0])
        return msg, Request(body=self._message(msg, False), raw="messages[] fromMe=false")

    def new_outgoing(self) -> Msg:
        contact = self.ids.phone()
        key = self.ids.serialized(True, f"{contact}@c.us", self.ids.web_id())
        return Msg(key=key, contact=contact, text=self.texts()[1])

    def outgoing(self, msg: Msg) -> Request:
        return Request(body=self._message(msg, True), raw="messages[] fromMe=true")

    def ack(self, msg: Msg, status: Ack) -> Request:
        entry = {
            "id": msg.key,
            "messageNumber": self.numbers.get(msg.key, 0),
            "chatId": f"{msg.contact}@c.us",
            "status": STATUS[status],
        }
        body = encode({"instanceId": self.instance_id, "ack": [entry]})
        return Request(body=body, raw=f"ack[] {STATUS[status]}")

    def instance(self, up: bool) -> Request:
        substatus = "normal" if up else "phone"  # phone: "the phone is not connected"
        status = {"accountStatus": "authenticated", "statusData": {"substatus": substatus}}
        body = encode({"instanceId": self.instance_id, "status": status})
        return Request(body=body, raw=f"authenticated/{substatus}")
