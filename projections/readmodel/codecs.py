"""How the jsonb columns of the read model are encoded and decoded, once for every reader.

``milestones`` (``messages``, ``receipts``) is a JSON object status → :class:`Milestone`;
``failures`` (``messages``) is a JSON array of :class:`Failure`; ``acks`` (``messages``)
an object status → ``[first, last]`` (:class:`AckSpan`); ``anomalies`` an array of names. Both are read as text
(``col::text``, see ``Table.select_list``) and decoded here with msgspec.
"""

from __future__ import annotations

import msgspec

from projections.rules.message_state import AckSpan, Failure, Milestone

_milestones = msgspec.json.Decoder(dict[str, Milestone])
_failures = msgspec.json.Decoder(list[Failure])
_acks = msgspec.json.Decoder(dict[str, AckSpan])
_names = msgspec.json.Decoder(list[str])
_encoder = msgspec.json.Encoder()


def decode_milestones(raw: str | bytes) -> dict[str, Milestone]:
    return _milestones.decode(raw)


def decode_failures(raw: str | bytes) -> list[Failure]:
    return _failures.decode(raw)


def decode_acks(raw: str | bytes) -> dict[str, AckSpan]:
    return _acks.decode(raw)


def decode_names(raw: str | bytes) -> list[str]:
    return _names.decode(raw)


def encode(value: dict[str, Milestone] | list[Failure] | dict[str, AckSpan] | list[str]) -> str:
    """The text a jsonb parameter is sent as (cast to jsonb by the statement)."""
    return _encoder.encode(value).decode()
