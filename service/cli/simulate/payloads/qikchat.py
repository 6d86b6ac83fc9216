"""Qikchat bodies (shapes: shared/samples/qikchat/*): ``whatsapp:message:in`` and
``whatsapp:message:status`` (the valid-JSON form of the published example)."""

from __future__ import annotations

from typing import ClassVar

from service.cli.simulate.payloads.base import Ack, Builder, Msg, Request, Step, encode, iso, now


class Qikchat(Builder):
    name = "qikchat"
    cannot: ClassVar[dict[Step, str]] = {
        "outgoing": "Qikchat posts no webhook for the messages you send; the first status"
        " creates the message",
        "failure": "Qikchat documents only sent, delivered and read statuses",
        "instance": "Qikchat sends no instance (connection) events",
    }

    def incoming(self) -> tuple[Msg, Request]:
        msg = Msg(key=self.ids.alnum(25), contact=self.ids.phone(), text=self.texts()[0])
        payload = {
            "id": msg.key,
            "name": "whatsapp",
            "contacts": [{"profile": {"name": "Simulated Contact"}, "to": f"+{self.me}"}],
            "message": {
                "from": msg.contact,
                "timestamp": iso(now()),
                "text": {"body": msg.text},
                "type": "text",
            },
        }
        body = encode({"event": "whatsapp:message:in", "payload": payload})
        return msg, Request(body=body, raw="whatsapp:message:in")

    def new_outgoing(self) -> Msg:
        return Msg(key=self.ids.alnum(25), contact=self.ids.phone(), text=self.texts()[1])

    def ack(self, msg: Msg, status: Ack) -> Request:
        payload = {
            "id": msg.key,
            "name": "whatsapp",
            "from": self.me,
            "to": f"+{msg.contact}",
            "status": status,
            "timestamp": iso(now()),
        }
        body = encode({"event": "whatsapp:message:status", "payload": payload})
        return Request(body=body, raw=f"whatsapp:message:status {status}")
