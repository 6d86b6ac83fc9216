"""WAHA bodies (shapes: shared/samples/waha/*): the newer envelope with its ``evt_…`` event
id, ``message``/``message.any``, ``message.ack`` and ``session.status`` (engine WEBJS)."""

from __future__ import annotations

from typing import Any

from service.cli.simulate.payloads.base import Ack, Builder, Failure, Msg, Request, encode, now

#: our canonical ack → WAHA ``ack`` and ``ackName``
ACK: dict[Ack, tuple[int, str]] = {
    "sent": (1, "SERVER"),
    "delivered": (2, "DEVICE"),
    "read": (3, "READ"),
}

ENVIRONMENT = {"version": "2024.11.11", "engine": "WEBJS", "tier": "CORE", "browser": None}


class Waha(Builder):
    name = "waha"
    notes = ("an ack of -1 (ERROR) carries no error detail",)

    def _event(self, event: str, payload: dict[str, Any]) -> bytes:
        return encode(
            {
                "id": "evt_" + self.ids.ulid(),  # WAHA's event id: the dedup key
                "timestamp": int(now() * 1000),
                "event": event,
                "session": "default",
                "me": {"id": f"{self.me}@c.us", "pushName": "acklog"},
                "payload": payload,
                "engine": "WEBJS",
                "environment": ENVIRONMENT,
            }
        )

    def _message(self, msg: Msg, from_me: bool, ack: int, ack_name: str) -> dict[str, Any]:
        me, them, at = f"{self.me}@c.us", f"{msg.contact}@c.us", int(now())
        sender, to = (me, them) if from_me else (them, me)
        bare = msg.key.rsplit("_", 1)[-1]
        data = {
            "id": {"fromMe": from_me, "remote": them, "id": bare, "_serialized": msg.key},
            "body": msg.text,
            "type": "chat",
            "t": at,
            "notifyName": "Simulated Contact",
            "from": sender,
            "to": to,
            "ack": ack,
            "isNewMsg": True,
        }
        return {
            "id": msg.key,
            "timestamp": at,
            "from": sender,
            "fromMe": from_me,
            "to": to,
            "body": msg.text,
            "hasMedia": False,
            "ack": ack,
            "ackName": ack_name,
            "vCards": [],
            "_data": data,
        }

    def incoming(self) -> tuple[Msg, Request]:
        contact = self.ids.phone()
        key = self.ids.serialized(False, f"{contact}@c.us", self.ids.phone_id())
        msg = Msg(key=key, contact=contact, text=self.texts()[0])
        body = self._event("message", self._message(msg, False, 1, "SERVER"))
        return msg, Request(body=body, raw="message")

    def new_outgoing(self) -> Msg:
        contact = self.ids.phone()
        key = self.ids.serialized(True, f"{contact}@c.us", self.ids.web_id())
        return Msg(key=key, contact=contact, text=self.texts()[1])

    def outgoing(self, msg: Msg) -> Request:
        body = self._event("message.any", self._message(msg, True, 0, "PENDING"))
        return Request(body=body, raw="message.any ack=0 PENDING")

    def _ack(self, msg: Msg, ack: int, name: str) -> Request:
        payload = {
            "id": msg.key,
            "from": f"{msg.contact}@c.us",
            "participant": None,
            "fromMe": True,
            "ack": ack,
            "ackName": name,
        }
        return Request(body=self._event("message.ack", payload), raw=f"message.ack {ack} {name}")

    def ack(self, msg: Msg, status: Ack) -> Request:
        return self._ack(msg, *ACK[status])

    def failure(self, msg: Msg) -> Failure:
        return Failure(request=self._ack(msg, -1, "ERROR"))

    def instance(self, up: bool) -> Request:
        status = "WORKING" if up else "FAILED"
        body = self._event("session.status", {"status": status})
        return Request(body=body, raw=f"session.status {status}")
