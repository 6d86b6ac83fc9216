"""WhatsGate bodies (shapes: shared/samples/whatsgate/*): an envelope with its own event id
around a whatsapp-web.js message; ``message``, ``create``, ``ack``, ``disconnect``, ``ready``."""

from __future__ import annotations

from typing import Any, ClassVar

from service.cli.simulate.payloads.base import Ack, Builder, Msg, Request, Step, encode, naive, now

#: our canonical ack → whatsapp-web.js ``ack`` (the doc lists 1 sent, 2 delivered, 3 read)
ACK: dict[Ack, int] = {"sent": 1, "delivered": 2, "read": 3}


class WhatsGate(Builder):
    name = "whatsgate"
    cannot: ClassVar[dict[Step, str]] = {
        "failure": "WhatsGate's error event names no message (only event_data.error), so no"
        " failure can be tied to one",
    }

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.whatsapp_id = self.ids.hex(11, upper=False)

    def _event(self, action: str, data: dict[str, Any]) -> bytes:
        return encode(
            {
                "id": self.ids.serial(),  # WhatsGate's event id: echoed back, and the dedup key
                "whatsapp_id": self.whatsapp_id,
                "event_action": action,
                "event_date": naive(now()),
                "status_code": None,
                "event_data": data,
            }
        )

    def _message(self, msg: Msg, from_me: bool, ack: int) -> dict[str, Any]:
        me, them = f"{self.me}@c.us", f"{msg.contact}@c.us"
        return {
            "message": {
                "_id": msg.key,
                "id": self.ids.serialized(from_me, them, msg.key),
                "ack": ack,
                "hasMedia": False,
                "mediaKey": "",
                "body": msg.text,
                "type": "chat",
                "timestamp": int(now()),
                "from": me if from_me else them,
                "to": them if from_me else me,
                "isForwarded": False,
            }
        }

    def incoming(self) -> tuple[Msg, Request]:
        msg = Msg(key="3EB0" + self.ids.hex(16), contact=self.ids.phone(), text=self.texts()[0])
        body = self._event("message", self._message(msg, False, 1))
        return msg, Request(body=body, raw="message")

    def new_outgoing(self) -> Msg:
        return Msg(key="3EB0" + self.ids.hex(16), contact=self.ids.phone(), text=self.texts()[1])

    def outgoing(self, msg: Msg) -> Request:
        # whatsapp-web.js creates our message PENDING (ack 0); the acks follow
        return Request(body=self._event("create", self._message(msg, True, 0)), raw="create ack=0")

    def ack(self, msg: Msg, status: Ack) -> Request:
        body = self._event("ack", self._message(msg, True, ACK[status]))
        return Request(body=body, raw=f"ack ack={ACK[status]}")

    def instance(self, up: bool) -> Request:
        if up:
            data = {"pushname": "acklog", "number": self.me, "id": f"{self.me}@c.us"}
            return Request(body=self._event("ready", data), raw="ready")
        body = self._event("disconnect", {"reason": "Client disconnected"})
        return Request(body=body, raw="disconnect")
