"""Per-provider webhook bodies for the simulator, built from the real sample shapes.

One module per provider, mirroring ``projections.providers``: each knows only how its
provider words an incoming message, our own message, an ack, a failure and the instance going
down or up, and says which of those its provider cannot report.
"""

from __future__ import annotations

from service.cli.simulate.payloads.base import Builder
from service.cli.simulate.payloads.chatapi import ChatApi
from service.cli.simulate.payloads.evolution import Evolution
from service.cli.simulate.payloads.greenapi import GreenApi
from service.cli.simulate.payloads.meta import Meta
from service.cli.simulate.payloads.qikchat import Qikchat
from service.cli.simulate.payloads.twilio import Twilio
from service.cli.simulate.payloads.waha import Waha
from service.cli.simulate.payloads.wamm import Wamm
from service.cli.simulate.payloads.whatsable import WhatsAble
from service.cli.simulate.payloads.whatsgate import WhatsGate
from service.cli.simulate.payloads.zapi import ZApi

BUILDERS: dict[str, type[Builder]] = {
    b.name: b
    for b in (
        Wamm,
        WhatsGate,
        ChatApi,
        WhatsAble,
        Qikchat,
        Meta,
        Waha,
        Evolution,
        GreenApi,
        Twilio,
        ZApi,
    )
}

__all__ = ["BUILDERS", "Builder"]
