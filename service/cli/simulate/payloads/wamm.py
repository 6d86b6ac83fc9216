"""WAMM.chat bodies (shapes: shared/samples/wamm/*): ``tip=msg`` and ``tip=msg_state``."""

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
    naive,
    now,
)

#: our canonical ack → WAMM's ``state`` wording
STATE: dict[Ack, str] = {"sent": "sent", "delivered": "delivered", "read": "viewed"}


class Wamm(Builder):
    name = "wamm"
    cannot: ClassVar[dict[Step, str]] = {
        "instance": "WAMM.chat sends no instance (connection) events",
    }

    def _msg(self, msg_id: int, from_me: bool, contact: str, text: str, state: str) -> Request:
        data: dict[str, Any] = {
            "msg_id": msg_id,  # an int here, a string in msg_state (as in the doc)
            "qoute_msg_id": None,
            "from_api": int(from_me),
            "from_me": int(from_me),
            "phone_acc": self.me,
            "phone": contact,
            "chat_name": "Simulated Contact",
            "tip_msg": "textMessage",
            "msg_text": text,
            "msg_link": None,
            "date_ins": naive(now()),
            "state": state,
            "senderId": None,
            "senderName": None,
        }
        return Request(body=encode({"tip": "msg", "msg_data": data}), raw=f"tip=msg {state}")

    def incoming(self) -> tuple[Msg, Request]:
        msg_id, text = self.ids.serial(), self.texts()[0]
        msg = Msg(key=str(msg_id), contact=self.ids.phone(), text=text)
        return msg, self._msg(msg_id, False, msg.contact, text, "received")

    def new_outgoing(self) -> Msg:
        return Msg(key=str(self.ids.serial()), contact=self.ids.phone(), text=self.texts()[1])

    def outgoing(self, msg: Msg) -> Request:
        return self._msg(int(msg.key), True, msg.contact, msg.text, "sending")

    def _state(self, msg: Msg, state: str) -> Request:
        data = {"msg_id": msg.key, "date_upd": naive(now()), "state": state}
        return Request(
            body=encode({"tip": "msg_state", "msg_data": data}), raw=f"msg_state {state}"
        )

    def ack(self, msg: Msg, status: Ack) -> Request:
        return self._state(msg, STATE[status])

    def failure(self, msg: Msg) -> Failure:
        return Failure(request=self._state(msg, "not sent"))
