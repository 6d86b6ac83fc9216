"""Evolution API bodies for ``acklog simulate`` (shapes: shared/samples/evolution/*)."""

from __future__ import annotations

import uuid
from typing import Any

from projections.providers.simulation import Ack, Builder, Failure, Msg, Request, encode, iso, now

#: our canonical ack → Evolution's ``status`` (Baileys names)
STATUS: dict[Ack, str] = {"sent": "SERVER_ACK", "delivered": "DELIVERY_ACK", "read": "READ"}

#: Baileys ``DisconnectReason.connectionClosed``: a plain drop, not a logout (401)
CONNECTION_CLOSED = 428


class Simulator(Builder):
    """Evolution API bodies (shapes: shared/samples/evolution/*): the envelope around
    ``messages.upsert``, ``messages.update`` (Baileys status names) and ``connection.update``."""

    notes = ("status ERROR carries no error detail",)

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.instance_name = "sim-" + self.ids.alnum(6, "abcdefghijklmnopqrstuvwxyz0123456789")
        self.instance_id = str(uuid.UUID(int=self.ids.rng.getrandbits(128), version=4))
        self.apikey = self.ids.hex(32)

    def _event(self, event: str, data: dict[str, Any]) -> bytes:
        return encode(
            {
                "event": event,
                "instance": self.instance_name,
                "data": data,
                "destination": self.url,
                "date_time": iso(now()),
                "sender": f"{self.me}@s.whatsapp.net",
                "server_url": "http://localhost:8080",
                "apikey": self.apikey,
            }
        )

    def _upsert(self, msg: Msg, from_me: bool) -> bytes:
        key = {"remoteJid": f"{msg.contact}@s.whatsapp.net", "fromMe": from_me, "id": msg.key}
        data = {
            "key": key,
            "pushName": "acklog" if from_me else "Simulated Contact",
            "message": {"conversation": msg.text},
            "messageType": "conversation",
            "messageTimestamp": int(now()),
            "owner": self.instance_name,
            "source": "web" if from_me else "android",
        }
        return self._event("messages.upsert", data)

    def _new(self, text: str) -> Msg:
        ref = "cm" + self.ids.alnum(23, "abcdefghijklmnopqrstuvwxyz0123456789")
        return Msg(key=self.ids.web_id(), contact=self.ids.phone(), text=text, ref=ref)

    def incoming(self) -> tuple[Msg, Request]:
        msg = self._new(self.texts()[0])
        return msg, Request(body=self._upsert(msg, False), raw="messages.upsert fromMe=false")

    def new_outgoing(self) -> Msg:
        return self._new(self.texts()[1])

    def outgoing(self, msg: Msg) -> Request:
        return Request(body=self._upsert(msg, True), raw="messages.upsert fromMe=true")

    def _update(self, msg: Msg, status: str) -> Request:
        data = {
            "keyId": msg.key,
            "remoteJid": f"{msg.contact}@s.whatsapp.net",
            "fromMe": True,
            "participant": None,
            "status": status,
            "instanceId": self.instance_id,
            "messageId": msg.ref,  # Evolution's own row id, not the message key
        }
        return Request(body=self._event("messages.update", data), raw=f"messages.update {status}")

    def ack(self, msg: Msg, status: Ack) -> Request:
        return self._update(msg, STATUS[status])

    def failure(self, msg: Msg) -> Failure:
        return Failure(request=self._update(msg, "ERROR"))

    def instance(self, up: bool) -> Request:
        data: dict[str, Any] = {"instance": self.instance_name}
        if up:
            data |= {"wuid": f"{self.me}@s.whatsapp.net", "profileName": "acklog"}
            data |= {"profilePictureUrl": None, "state": "open", "statusReason": 200}
        else:
            data |= {"state": "close", "statusReason": CONNECTION_CLOSED}
        body = self._event("connection.update", data)
        return Request(body=body, raw=f"connection.update {data['state']}")
