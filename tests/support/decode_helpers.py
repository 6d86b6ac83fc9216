"""What the decoder tests share: decode a sample file or a JSON payload, or get the error reason."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from projections.facts import DecodeError, Fact
from projections.providers import Decoder
from tests.support.samples import JSON, sample


@dataclass(frozen=True)
class Decoding:
    """One provider's decoder, fed the ways its tests feed it."""

    provider: str
    decode: Decoder

    def sample(self, name: str) -> list[Fact]:
        """Decode a published sample with the content type it was posted with."""
        body, ctype = sample(self.provider, name)
        return self.decode(body, ctype, {"Content-Type": ctype})

    def json(self, payload: Any) -> list[Fact]:
        """Decode ``payload`` sent as a JSON body, without headers."""
        return self.decode(json.dumps(payload).encode(), JSON, {})

    def reason(self, payload: Any) -> str:
        """The reason of the DecodeError ``payload`` must raise."""
        with pytest.raises(DecodeError) as info:
            self.json(payload)
        return info.value.reason
