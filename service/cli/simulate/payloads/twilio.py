"""Twilio bodies (shapes: shared/samples/twilio/*): form-encoded status callbacks and the
incoming-message webhook of a WhatsApp sender."""

from __future__ import annotations

import urllib.parse
from typing import Any, ClassVar

from service.cli.simulate.payloads.base import FORM, Ack, Builder, Failure, Msg, Request, Step

#: the failure in shared/samples/twilio/status_failed_63018_rate_limit.json
ERROR_CODE = "63018"

#: WhatsApp status callbacks name the event too (``EventType=DELIVERED`` in the samples)
EVENT: dict[str, str] = {"delivered": "DELIVERED", "read": "READ"}


class Twilio(Builder):
    name = "twilio"
    cannot: ClassVar[dict[Step, str]] = {
        "instance": "Twilio sends no connection events for a WhatsApp sender",
    }
    notes = ("the outgoing message shows up as its first status callback (queued)",)

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.account = self.ids.twilio_sid("AC")
        self.channel_install = self.ids.twilio_sid("XE")

    def _form(self, fields: dict[str, str]) -> Request:
        status = fields.get("MessageStatus")
        raw = f"MessageStatus={status}" if status else f"SmsStatus={fields.get('SmsStatus')}"
        return Request(body=urllib.parse.urlencode(fields).encode(), raw=raw, content_type=FORM)

    def incoming(self) -> tuple[Msg, Request]:
        msg = Msg(key=self.ids.twilio_sid(), contact=self.ids.phone(), text=self.texts()[0])
        request = self._form(
            {
                "SmsMessageSid": msg.key,
                "NumMedia": "0",
                "ProfileName": "Simulated Contact",
                "MessageType": "text",
                "SmsSid": msg.key,
                "WaId": msg.contact,
                "SmsStatus": "received",
                "Body": msg.text,
                "To": f"whatsapp:+{self.me}",
                "NumSegments": "1",
                "ReferralNumMedia": "0",
                "MessageSid": msg.key,
                "AccountSid": self.account,
                "From": f"whatsapp:+{msg.contact}",
                "ApiVersion": "2010-04-01",
            }
        )
        return msg, request

    def new_outgoing(self) -> Msg:
        return Msg(key=self.ids.twilio_sid(), contact=self.ids.phone(), text=self.texts()[1])

    def _status(self, msg: Msg, status: str, **extra: str) -> Request:
        fields = {"EventType": EVENT[status]} if status in EVENT else {}
        fields |= {
            "SmsSid": msg.key,
            "SmsStatus": status,
            "MessageStatus": status,
            "ChannelToAddress": f"+{msg.contact}",
            "To": f"whatsapp:+{msg.contact}",
            "ChannelPrefix": "whatsapp",
            "MessageSid": msg.key,
            "AccountSid": self.account,
            "From": f"whatsapp:+{self.me}",
            "ApiVersion": "2010-04-01",
            "ChannelInstallSid": self.channel_install,
            **extra,
        }
        return self._form(fields)

    def outgoing(self, msg: Msg) -> Request:
        return self._status(msg, "queued")

    def ack(self, msg: Msg, status: Ack) -> Request:
        return self._status(msg, status)

    def failure(self, msg: Msg) -> Failure:
        return Failure(request=self._status(msg, "failed", ErrorCode=ERROR_CODE), code=ERROR_CODE)
