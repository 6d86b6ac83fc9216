"""Z-API bodies (shapes: shared/samples/zapi/*): ``ReceivedCallback``, ``DeliveryCallback``,
``MessageStatusCallback`` and the connect/disconnect callbacks."""

from __future__ import annotations

from typing import Any

from service.cli.simulate.payloads.base import Ack, Builder, Failure, Msg, Request, encode, now

#: our canonical ack → Z-API's status (RECEIVED means delivered to the device)
STATUS: dict[Ack, str] = {"sent": "SENT", "delivered": "RECEIVED", "read": "READ"}

#: what production DeliveryCallbacks carry on a failed send (Z-API's docs show no failure)
ERROR = "Phone number does not exist"


class ZApi(Builder):
    name = "zapi"
    #: a failed send gets one DeliveryCallback, with ``error``, instead of the plain one
    failure_replaces_outgoing = True
    announced_state = "sent"  # DeliveryCallback: the message reached WhatsApp's servers
    notes = (
        "the failure is a DeliveryCallback with 'error', as seen in production callbacks"
        " (Z-API's docs show no failure)",
    )

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.instance_id = self.ids.hex(32)

    def incoming(self) -> tuple[Msg, Request]:
        msg = Msg(key=self.ids.phone_id(), contact=self.ids.phone(), text=self.texts()[0])
        body = encode(
            {
                "isStatusReply": False,
                "senderLid": self.ids.digits(14) + "@lid",
                "connectedPhone": self.me,
                "waitingMessage": False,
                "isEdit": False,
                "isGroup": False,
                "isNewsletter": False,
                "instanceId": self.instance_id,
                "messageId": msg.key,
                "phone": msg.contact,
                "fromMe": False,
                "momment": int(now() * 1000),
                "status": "RECEIVED",
                "chatName": "Simulated Contact",
                "senderPhoto": None,
                "senderName": "Simulated Contact",
                "participantPhone": None,
                "participantLid": None,
                "photo": None,
                "broadcast": False,
                "forwarded": False,
                "type": "ReceivedCallback",
                "fromApi": False,
                "text": {"message": msg.text},
            }
        )
        return msg, Request(body=body, raw="ReceivedCallback")

    def new_outgoing(self) -> Msg:
        return Msg(
            key=self.ids.web_id(),
            contact=self.ids.phone(),
            text=self.texts()[1],
            ref=self.ids.hex(32),
        )

    def _delivery(self, msg: Msg, **extra: Any) -> bytes:
        return encode(
            {
                "phone": msg.contact,
                "zaapId": msg.ref,
                "messageId": msg.key,
                "type": "DeliveryCallback",
                "instanceId": self.instance_id,
                "momment": int(now() * 1000),
                **extra,
            }
        )

    def outgoing(self, msg: Msg) -> Request:
        return Request(body=self._delivery(msg), raw="DeliveryCallback")

    def ack(self, msg: Msg, status: Ack) -> Request:
        body = encode(
            {
                "status": STATUS[status],
                "ids": [msg.key],
                "momment": int(now() * 1000),
                "phone": msg.contact,
                "type": "MessageStatusCallback",
                "instanceId": self.instance_id,
            }
        )
        return Request(body=body, raw=f"MessageStatusCallback {STATUS[status]}")

    def failure(self, msg: Msg) -> Failure:
        return Failure(
            request=Request(body=self._delivery(msg, error=ERROR), raw="DeliveryCallback error")
        )

    def instance(self, up: bool) -> Request:
        if up:
            fields: dict[str, Any] = {"type": "ConnectedCallback", "connected": True}
            fields |= {"momment": int(now() * 1000), "phone": self.me}
        else:
            fields = {"momment": int(now()), "error": "Device has been disconnected"}
            fields |= {"disconnected": True, "type": "DisconnectedCallback"}
        body = encode({**fields, "instanceId": self.instance_id})
        return Request(body=body, raw=fields["type"])
