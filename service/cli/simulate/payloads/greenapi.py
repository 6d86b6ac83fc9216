"""Green-API bodies (shapes: shared/samples/green_api/*): ``incomingMessageReceived``,
``outgoingAPIMessageReceived``, ``outgoingMessageStatus`` and ``statusInstanceChanged``."""

from __future__ import annotations

from typing import Any

from service.cli.simulate.payloads.base import Ack, Builder, Failure, Msg, Request, encode, now

#: the terminal failure in shared/samples/green_api/outgoingMessageStatus_noAccount.json
FAILED = "noAccount"


class GreenApi(Builder):
    name = "greenapi"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.instance_data = {
            "idInstance": int("1101" + self.ids.digits(6)),
            "wid": f"{self.me}@c.us",
            "typeInstance": "whatsapp",
        }

    def _webhook(self, kind: str, **fields: Any) -> bytes:
        return encode(
            {
                "typeWebhook": kind,
                "instanceData": self.instance_data,
                "timestamp": int(now()),
                **fields,
            }
        )

    def incoming(self) -> tuple[Msg, Request]:
        msg = Msg(key=self.ids.phone_id(), contact=self.ids.phone(), text=self.texts()[0])
        chat = f"{msg.contact}@c.us"
        body = self._webhook(
            "incomingMessageReceived",
            idMessage=msg.key,
            senderData={
                "chatId": chat,
                "chatName": "Simulated Contact",
                "sender": chat,
                "senderName": "Simulated Contact",
                "senderContactName": "",
            },
            messageData={
                "typeMessage": "textMessage",
                "textMessageData": {"textMessage": msg.text},
            },
        )
        return msg, Request(body=body, raw="incomingMessageReceived")

    def new_outgoing(self) -> Msg:
        # ids of messages sent through the API start BAE5 (Baileys style)
        return Msg(key="BAE5" + self.ids.hex(12), contact=self.ids.phone(), text=self.texts()[1])

    def outgoing(self, msg: Msg) -> Request:
        body = self._webhook(
            "outgoingAPIMessageReceived",
            idMessage=msg.key,
            senderData={
                "chatId": f"{msg.contact}@c.us",
                "chatName": "Simulated Contact",
                "sender": f"{self.me}@c.us",
                "senderName": "acklog",
            },
            messageData={
                "typeMessage": "extendedTextMessage",
                "extendedTextMessageData": {
                    "text": msg.text,
                    "description": "",
                    "title": "",
                    "previewType": "None",
                    "jpegThumbnail": "",
                    "forwardingScore": 0,
                    "isForwarded": False,
                },
            },
        )
        return Request(body=body, raw="outgoingAPIMessageReceived")

    def _status(self, msg: Msg, status: str) -> Request:
        body = self._webhook(
            "outgoingMessageStatus",
            chatId=f"{msg.contact}@c.us",
            idMessage=msg.key,
            status=status,
            sendByApi=True,
        )
        return Request(body=body, raw=f"outgoingMessageStatus {status}")

    def ack(self, msg: Msg, status: Ack) -> Request:
        return self._status(msg, status)

    def failure(self, msg: Msg) -> Failure:
        return Failure(request=self._status(msg, FAILED), code=FAILED)

    def instance(self, up: bool) -> Request:
        state = "online" if up else "offline"
        body = self._webhook("statusInstanceChanged", statusInstance=state)
        return Request(body=body, raw=f"statusInstanceChanged {state}")
